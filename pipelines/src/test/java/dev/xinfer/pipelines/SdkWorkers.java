package dev.xinfer.pipelines;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;

/**
 * The Python SDK workers this JVM's worker pool starts (descendants of this JVM whose command line
 * runs Beam's {@code SdkHarness}), watched on a thread of their own; can kill one as a fault would
 * (SIGKILL).
 */
final class SdkWorkers implements AutoCloseable {
  private final Set<Long> seen = new LinkedHashSet<>();
  private final List<Long> killed = new ArrayList<>();
  private final Thread watcher;
  private volatile boolean running = true;
  private final long killAfterNanos;
  private long firstSeenNanos;

  /** Watches the workers; kills the first one {@code killAfter} after it started (null: never). */
  SdkWorkers(Duration killAfter) {
    this.killAfterNanos = killAfter == null ? Long.MAX_VALUE : killAfter.toNanos();
    this.watcher = new Thread(this::watch, "xinfer-it-sdk-workers");
    watcher.setDaemon(true);
    watcher.start();
  }

  private void watch() {
    while (running) {
      for (ProcessHandle worker : current()) {
        synchronized (this) {
          if (seen.add(worker.pid()) && seen.size() == 1) {
            firstSeenNanos = System.nanoTime();
          }
          if (killed.isEmpty()
              && seen.size() == 1
              && System.nanoTime() - firstSeenNanos >= killAfterNanos) {
            worker.destroyForcibly();
            killed.add(worker.pid());
          }
        }
      }
      try {
        Thread.sleep(100);
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  private static List<ProcessHandle> current() {
    List<ProcessHandle> workers = new ArrayList<>();
    ProcessHandle.current()
        .descendants()
        .filter(p -> p.isAlive() && isSdkWorker(p.info().arguments()))
        .forEach(workers::add);
    return workers;
  }

  private static boolean isSdkWorker(Optional<String[]> arguments) {
    return arguments.map(a -> String.join(" ", a).contains("SdkHarness(")).orElse(false);
  }

  /** Every SDK worker process seen so far, by pid, in the order they appeared. */
  synchronized List<Long> seen() {
    return new ArrayList<>(seen);
  }

  /** The workers this killed. */
  synchronized List<Long> killed() {
    return new ArrayList<>(killed);
  }

  @Override
  public void close() throws InterruptedException {
    running = false;
    watcher.join(5_000);
  }
}
