package dev.xinfer.pipelines.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Peak resident memory (Linux {@code VmHWM}) of this JVM and of the Python processes it started
 * (expansion service, worker pool, SDK workers, a model server), sampled twice a second because SDK
 * workers exit with their job.
 */
final class PeakRss implements AutoCloseable {
  private final Map<Long, Long> pythonPeakKb = new ConcurrentHashMap<>();
  private final Set<Long> excluded = ConcurrentHashMap.newKeySet();
  private final Thread sampler;
  private volatile boolean running = true;

  PeakRss() {
    sampler = new Thread(this::sample, "peak-rss");
    sampler.setDaemon(true);
    sampler.start();
  }

  private void sample() {
    while (running) {
      ProcessHandle.current()
          .descendants()
          .filter(p -> !excluded.contains(p.pid()))
          .filter(p -> p.info().command().map(c -> c.contains("python")).orElse(false))
          .forEach(p -> pythonPeakKb.merge(p.pid(), highWaterKb(p.pid()), Math::max));
      try {
        Thread.sleep(500);
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  /** This JVM's peak resident memory, MB. */
  double jvmMb() {
    return highWaterKb(ProcessHandle.current().pid()) / 1024.0;
  }

  /** The Python processes' peaks added up, MB: a bound on what they held at once. */
  double pythonMb() {
    return pythonPeakKb.entrySet().stream()
            .filter(e -> !excluded.contains(e.getKey()))
            .mapToLong(Map.Entry::getValue)
            .sum()
        / 1024.0;
  }

  /** Leaves out a process this JVM started that is not part of the approach (plain Python's). */
  void exclude(long pid) {
    excluded.add(pid);
  }

  private static long highWaterKb(long pid) {
    try {
      for (String line : Files.readAllLines(Paths.get("/proc/" + pid + "/status"))) {
        if (line.startsWith("VmHWM:")) {
          return Long.parseLong(line.replaceAll("[^0-9]", ""));
        }
      }
    } catch (IOException | RuntimeException e) {
      // The process ended between listing and reading: its last sample stands.
    }
    return 0;
  }

  @Override
  public void close() {
    running = false;
    sampler.interrupt();
  }
}
