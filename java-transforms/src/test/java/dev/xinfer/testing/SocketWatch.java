package dev.xinfer.testing;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.stream.Collectors;

/**
 * Samples, every 50 ms while it is open, the listening sockets of some processes and their
 * descendants ({@link ListeningSockets#byProcess}). A failed sample fails {@link #close}: a check
 * that could not look must not pass.
 */
public final class SocketWatch implements AutoCloseable {
  private final Supplier<Collection<Long>> roots;
  private final Map<Long, Set<String>> seen = new ConcurrentHashMap<>();
  private final List<Throwable> errors = new CopyOnWriteArrayList<>();
  private final ScheduledExecutorService poller = Executors.newSingleThreadScheduledExecutor();
  private int samples;

  private SocketWatch(Supplier<Collection<Long>> roots) {
    this.roots = roots;
  }

  /** Work a watch runs. */
  public interface Job {
    void run() throws Exception;
  }

  /**
   * Runs {@code job} while sampling the processes {@code roots} names; a failure of the job is
   * thrown as it is (a failure of the watch then rides along as suppressed).
   */
  public static SocketWatch during(Supplier<Collection<Long>> roots, Job job) throws Exception {
    SocketWatch watch = start(roots);
    try {
      job.run();
    } catch (Exception | Error e) {
      try {
        watch.close();
      } catch (Exception closing) {
        e.addSuppressed(closing);
      }
      throw e;
    }
    watch.close();
    return watch;
  }

  /** Starts sampling the processes {@code roots} names at each sample. */
  public static SocketWatch start(Supplier<Collection<Long>> roots) {
    SocketWatch watch = new SocketWatch(roots);
    watch.poller.scheduleWithFixedDelay(watch::sample, 0, 50, TimeUnit.MILLISECONDS);
    return watch;
  }

  private void sample() {
    try {
      ListeningSockets.byProcess(roots.get())
          .forEach(
              (pid, addresses) ->
                  seen.computeIfAbsent(pid, p -> new HashSet<>()).addAll(addresses));
      samples++;
    } catch (Throwable e) {
      errors.add(e);
    }
  }

  /** Every address seen listening, by pid. */
  public Map<Long, Set<String>> seen() {
    return seen;
  }

  /** Every address seen listening. */
  public Set<String> all() {
    Set<String> all = new HashSet<>();
    seen.values().forEach(all::addAll);
    return all;
  }

  /** The addresses seen that are not loopback. */
  public Set<String> exposed() {
    return all().stream().filter(a -> !ListeningSockets.isLoopback(a)).collect(Collectors.toSet());
  }

  @Override
  public void close() throws Exception {
    poller.shutdown();
    poller.awaitTermination(10, TimeUnit.SECONDS);
    if (!errors.isEmpty()) {
      IllegalStateException e =
          new IllegalStateException("the socket check could not read /proc: " + errors.get(0));
      new ArrayList<>(errors).forEach(e::addSuppressed);
      throw e;
    }
    if (samples < 2) {
      throw new IllegalStateException("the socket check took " + samples + " samples");
    }
  }
}
