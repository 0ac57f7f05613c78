package dev.xinfer.runtime;

import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.sdk.Pipeline.PipelineExecutionException;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.metrics.MetricResults;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Duration;

/** The result of a pipeline run by {@link XinferRunner}: the portable job, awaited. */
public final class XinferPipelineResult implements PipelineResult {
  private final String runnerName;
  private final CompletableFuture<PortablePipelineResult> job;

  XinferPipelineResult(String runnerName, CompletableFuture<PortablePipelineResult> job) {
    this.runnerName = runnerName;
    this.job = job;
  }

  @Override
  public State getState() {
    if (!job.isDone()) {
      return State.RUNNING;
    }
    if (job.isCancelled()) {
      return State.CANCELLED;
    }
    if (job.isCompletedExceptionally()) {
      return State.FAILED;
    }
    return job.join().getState();
  }

  @Override
  public State cancel() {
    job.cancel(true);
    return getState();
  }

  @Override
  public State waitUntilFinish(Duration duration) {
    try {
      job.get(duration.getMillis(), TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      return null;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return null;
    } catch (ExecutionException | CancellationException e) {
      throw failure(e);
    }
    return getState();
  }

  @Override
  public State waitUntilFinish() {
    try {
      job.join();
    } catch (CompletionException | CancellationException e) {
      throw failure(e);
    }
    return getState();
  }

  @Override
  public MetricResults metrics() {
    return job.join().metrics();
  }

  /** The pipeline's failure, with the root cause's message (often a Python traceback) first. */
  private PipelineExecutionException failure(Exception e) {
    Throwable root = rootCause(e);
    String message = root.getMessage() == null ? root.toString() : root.getMessage();
    return new PipelineExecutionException(
        new RuntimeException(
            String.format("The pipeline failed on %s: %s", runnerName, message), root));
  }

  static Throwable rootCause(Throwable t) {
    Throwable root = t;
    @Nullable Throwable cause;
    while ((cause = root.getCause()) != null && cause != root) {
      root = cause;
    }
    return root;
  }
}
