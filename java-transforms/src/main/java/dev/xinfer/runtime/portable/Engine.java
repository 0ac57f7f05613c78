package dev.xinfer.runtime.portable;

import dev.xinfer.runtime.RunnerBootstrap;
import dev.xinfer.runtime.flink.FlinkEngine;
import dev.xinfer.runtime.spark.SparkEngine;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.display.DisplayData;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * A portable runner xinfer can run a pipeline on in this JVM: Beam's runner behind the engine's job
 * server, without the job server.
 */
@Internal
public interface Engine {
  /** The runner name users pass, e.g. {@code FlinkRunner}. */
  String runnerName();

  /** Where the job runs, for messages: e.g. {@code flinkMaster=[local]}. */
  String target();

  /** Whether the engine runs inside this JVM (embedded) rather than on a cluster. */
  boolean embedded();

  /** Rewrites the pipeline as the engine's classic runner would, before translation. */
  void adjust(Pipeline pipeline);

  /**
   * The runner for this job, on the submitting thread so that what is missing (JVM flags, a
   * reachable master) fails {@code Pipeline.run()} itself. Called once, before {@link #prepare}.
   */
  PortablePipelineRunner runner(JobInfo jobInfo);

  /** Sets up what the job needs in this JVM before it starts. */
  void prepare(JobInfo jobInfo);

  /** Undoes {@link #prepare} when the job has ended. */
  void release(JobInfo jobInfo);

  /**
   * Runs {@code runner} on the current thread until the job ends, and lets {@link #cancel} stop it
   * meanwhile.
   */
  PortablePipelineResult run(
      PortablePipelineRunner runner, RunnerApi.Pipeline pipeline, JobInfo jobInfo) throws Exception;

  /** Stops the job started by {@link #run}; returns whether a running job was asked to stop. */
  boolean cancel();

  /**
   * The metrics of the job started by {@link #run} while it runs (a streaming job), or null when
   * the engine cannot tell them yet.
   */
  @Nullable MetricResults liveMetrics();

  /** The engine for the runner the user asked for. */
  static Engine forRunner(String runnerName, PipelineOptions options) {
    switch (runnerName) {
      case "FlinkRunner":
        return new FlinkEngine(options);
      case "SparkRunner":
        return new SparkEngine(options);
      default:
        throw new IllegalArgumentException(
            "xinfer has no engine for " + runnerName + "; " + RunnerBootstrap.SUPPORTED_RUNNERS);
    }
  }

  /** Whether the user set the option {@code name} (a default is not shown as display data). */
  static boolean isSet(PipelineOptions options, String name) {
    return DisplayData.from(options).items().stream().anyMatch(i -> i.getKey().equals(name));
  }
}
