package dev.xinfer.runtime.portable;

import dev.xinfer.runtime.python.PythonServices;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.sdk.Pipeline.PipelineExecutionException;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.metrics.MetricResults;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Duration;

/** The result of a pipeline run by {@link XinferRunner}: the portable job, awaited. */
@Internal
public final class XinferPipelineResult implements PipelineResult {
  private final String runnerName;
  private final CompletableFuture<PortablePipelineResult> job;

  /** Completes once the engine has let go of the ended job: what the waits wait for. */
  private final CompletableFuture<?> released;

  private final BooleanSupplier stopJob;
  private final Supplier<@Nullable MetricResults> liveMetrics;
  private volatile boolean cancelled;
  private volatile @Nullable MetricResults metricsAtCancel;
  private final long startNanos;

  XinferPipelineResult(
      String runnerName,
      CompletableFuture<PortablePipelineResult> job,
      BooleanSupplier stopJob,
      Supplier<@Nullable MetricResults> liveMetrics) {
    this(runnerName, job, job, stopJob, liveMetrics, System.nanoTime());
  }

  /**
   * {@code released}: completes after {@code job} once the engine has let go of it (an embedded
   * engine shut down), so that a program that exits after {@link #waitUntilFinish} leaves nothing
   * half-closed; {@code startNanos}: when the job was started ({@link System#nanoTime}).
   */
  XinferPipelineResult(
      String runnerName,
      CompletableFuture<PortablePipelineResult> job,
      CompletableFuture<?> released,
      BooleanSupplier stopJob,
      Supplier<@Nullable MetricResults> liveMetrics,
      long startNanos) {
    this.startNanos = startNanos;
    this.runnerName = runnerName;
    this.job = job;
    this.released = released;
    this.stopJob = stopJob;
    this.liveMetrics = liveMetrics;
  }

  @Override
  public State getState() {
    if (!job.isDone()) {
      return State.RUNNING;
    }
    if (cancelled) {
      return State.CANCELLED;
    }
    if (job.isCompletedExceptionally()) {
      return State.FAILED;
    }
    return job.join().getState();
  }

  /** Stops the running job (a streaming job runs until cancelled) and waits until it has ended. */
  @Override
  public State cancel() {
    if (job.isDone()) {
      return getState();
    }
    cancelled = true;
    // A cancelled job reports no metrics of its own on some engines: keep the last ones seen.
    metricsAtCancel = liveMetrics.get();
    if (!stopJob.getAsBoolean()) {
      cancelled = false;
      throw new UnsupportedOperationException(
          runnerName + " could not cancel this job: it was not running yet, or it is a batch job");
    }
    try {
      job.get(60, TimeUnit.SECONDS);
    } catch (ExecutionException | CancellationException e) {
      // A cancelled job ends with an error on some engines: cancelling is what ended it.
    } catch (TimeoutException e) {
      throw new IllegalStateException(runnerName + " did not stop the job within 60 s", e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    // Now with the work the job finished while it stopped, where the engine still tells it.
    MetricResults last = liveMetrics.get();
    if (last != null) {
      metricsAtCancel = last;
    }
    try {
      released.get(60, TimeUnit.SECONDS);
    } catch (ExecutionException | CancellationException | TimeoutException e) {
      // Ended and cancelled: what is left of it is the engine's to report.
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    return State.CANCELLED;
  }

  @Override
  public State waitUntilFinish(Duration duration) {
    try {
      released.get(duration.getMillis(), TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      return null;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return null;
    } catch (ExecutionException | CancellationException e) {
      if (cancelled) {
        return State.CANCELLED;
      }
      throw failure(e);
    }
    return getState();
  }

  @Override
  public State waitUntilFinish() {
    try {
      released.join();
    } catch (CompletionException | CancellationException e) {
      if (cancelled) {
        return State.CANCELLED;
      }
      throw failure(e);
    }
    return getState();
  }

  /**
   * The job's metrics: final once it has ended; while a (streaming) job runs, what the engine
   * reports so far, or {@link UnsupportedOperationException} where it reports none (it never
   * blocks); for a cancelled job, the last ones seen before it was stopped when the engine gives
   * none with the cancelled job.
   */
  @Override
  public MetricResults metrics() {
    if (!job.isDone()) {
      MetricResults live = liveMetrics.get();
      if (live != null) {
        return live;
      }
      // Never block here: a streaming job runs until it is cancelled.
      throw new UnsupportedOperationException(
          runnerName
              + " reports no metrics while this job runs; read them once it has ended "
              + "(waitUntilFinish, or cancel a streaming job first)");
    }
    try {
      return job.join().metrics();
    } catch (CompletionException | CancellationException | UnsupportedOperationException e) {
      MetricResults last = metricsAtCancel;
      if (cancelled && last != null) {
        return last;
      }
      throw e;
    }
  }

  /** The pipeline's failure, with the root cause's message (often a Python traceback) first. */
  private PipelineExecutionException failure(Exception e) {
    Throwable root = rootCause(e);
    String message = root.getMessage() == null ? root.toString() : root.getMessage();
    return new PipelineExecutionException(
        new RuntimeException(
            PythonServices.withNotices(
                String.format("The pipeline failed on %s: %s", runnerName, message),
                startNanos,
                root),
            root));
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
