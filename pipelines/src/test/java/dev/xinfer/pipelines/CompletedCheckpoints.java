package dev.xinfer.pipelines;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;

/**
 * The checkpoints that embedded Flink jobs of this JVM complete while it watches: each {@code <job
 * id>/chk-N} folder with a {@code _metadata} file that appears under the folder where xinfer keeps
 * them ({@code .xinfer/checkpoints} of the working directory), seen on a thread of its own (Flink
 * discards a job's checkpoints when the job is cancelled, so they are looked for while it runs).
 */
final class CompletedCheckpoints implements AutoCloseable {
  private final Path root = Path.of(".xinfer/checkpoints").toAbsolutePath();
  private final Set<String> before;
  private final Set<String> seen = new TreeSet<>();
  private final Thread watcher;
  private volatile boolean running = true;

  CompletedCheckpoints() {
    before = completed();
    watcher = new Thread(this::watch, "xinfer-it-checkpoints");
    watcher.setDaemon(true);
    watcher.start();
  }

  private void watch() {
    while (running) {
      Set<String> now = completed();
      now.removeAll(before);
      synchronized (this) {
        seen.addAll(now);
      }
      try {
        Thread.sleep(100);
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  /** {@code <job id>/chk-N} of every complete checkpoint under the folder now. */
  private Set<String> completed() {
    Set<String> found = new TreeSet<>();
    if (!Files.isDirectory(root)) {
      return found;
    }
    try (Stream<Path> jobs = Files.list(root)) {
      for (Path job : (Iterable<Path>) jobs::iterator) {
        try (Stream<Path> checkpoints = Files.list(job)) {
          checkpoints
              .filter(c -> c.getFileName().toString().matches("chk-\\d+"))
              .filter(c -> Files.isRegularFile(c.resolve("_metadata")))
              .forEach(c -> found.add(job.getFileName() + "/" + c.getFileName()));
        } catch (IOException | UncheckedIOException e) {
          // A job's folder removed as it ended.
        }
      }
    } catch (IOException | UncheckedIOException e) {
      // The folder removed while listed: nothing this time.
    }
    return found;
  }

  /** The complete checkpoints seen so far, as {@code <job id>/chk-N}. */
  synchronized Set<String> seen() {
    return new TreeSet<>(seen);
  }

  @Override
  public void close() throws InterruptedException {
    running = false;
    watcher.interrupt();
    watcher.join(5_000);
  }
}
