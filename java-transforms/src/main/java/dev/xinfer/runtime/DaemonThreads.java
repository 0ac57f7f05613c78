package dev.xinfer.runtime;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.beam.sdk.annotations.Internal;

/** Threads of xinfer's own that never keep a JVM alive. */
@Internal
public final class DaemonThreads {
  private DaemonThreads() {}

  /** An executor of one daemon thread called {@code name}. */
  public static ExecutorService singleThreadExecutor(String name) {
    return Executors.newSingleThreadExecutor(
        runnable -> {
          Thread thread = new Thread(runnable, name);
          thread.setDaemon(true);
          return thread;
        });
  }
}
