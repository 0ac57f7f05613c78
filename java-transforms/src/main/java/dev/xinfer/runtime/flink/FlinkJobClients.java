package dev.xinfer.runtime.flink;

import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.core.execution.JobListener;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Hands xinfer the {@link JobClient} of the Flink job Beam submits, so that a running job can be
 * cancelled. Beam's portable Flink runner blocks in {@code execute()} and keeps the client to
 * itself; Flink calls the job listeners named in {@code execution.job-listeners} (set in the
 * configuration xinfer writes for the embedded Flink) on the submitting thread, which is the thread
 * XinferRunner runs the job on.
 */
@Internal
public final class FlinkJobClients implements JobListener {
  private static final Map<Thread, CompletableFuture<JobClient>> BY_THREAD =
      new ConcurrentHashMap<>();

  /** Called by Flink: listeners need a public no-argument constructor. */
  public FlinkJobClients() {}

  /** The client of the job the current thread is about to submit. */
  static CompletableFuture<JobClient> expectOnThisThread() {
    return BY_THREAD.computeIfAbsent(Thread.currentThread(), t -> new CompletableFuture<>());
  }

  static void forgetThisThread() {
    BY_THREAD.remove(Thread.currentThread());
  }

  @Override
  public void onJobSubmitted(@Nullable JobClient jobClient, @Nullable Throwable throwable) {
    CompletableFuture<JobClient> expected = BY_THREAD.get(Thread.currentThread());
    if (expected == null) {
      return;
    }
    if (jobClient != null) {
      expected.complete(jobClient);
    } else {
      expected.completeExceptionally(
          throwable != null ? throwable : new IllegalStateException("no job client"));
    }
  }

  @Override
  public void onJobExecuted(
      @Nullable JobExecutionResult jobExecutionResult, @Nullable Throwable throwable) {}
}
