package dev.xinfer.runtime.portable;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.BeamHooks;
import dev.xinfer.runtime.DaemonThreads;
import dev.xinfer.runtime.LoopbackFnServers;
import dev.xinfer.runtime.RunnerBootstrap;
import dev.xinfer.runtime.TeardownNoise;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineRunner;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.ExperimentalOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.util.construction.DefaultArtifactResolver;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.PipelineTranslation;
import org.apache.beam.sdk.util.construction.SdkComponents;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Struct;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a pipeline that holds Python transforms on a portable runner (Flink or Spark), in this JVM.
 *
 * <p>Users do not name this runner: {@link RunnerBootstrap} puts it in place of {@code
 * --runner=FlinkRunner} or {@code --runner=SparkRunner} when the pipeline holds xinfer's
 * RunInference. It translates the pipeline to its portable form and hands it to the Beam runner
 * that sits behind that engine's job server ({@code FlinkPipelineRunner}, {@code
 * SparkPipelineRunner}), without a job server process or ports of its own. The Java stages run in
 * an EMBEDDED SDK harness inside the engine's tasks (no Docker); the Python stages run in the
 * worker pool the expansion service named. The engine's own flags ({@code --flinkMaster}, {@code
 * --sparkMaster}, {@code --parallelism}, {@code --streaming}...) are honoured.
 */
@Internal
public final class XinferRunner extends PipelineRunner<XinferPipelineResult> {
  private static final Logger LOG = LoggerFactory.getLogger(XinferRunner.class);

  /** {@code --experiments=xinfer_no_combiner_lifting} leaves Combines as Beam translates them. */
  public static final String NO_COMBINER_LIFTING = "xinfer_no_combiner_lifting";

  private static final String DATA_BUFFER_SIZE_LIMIT = "data_buffer_size_limit";
  private static final int DATA_BUFFER_BYTES = 32 << 20;

  private final PipelineOptions options;

  private XinferRunner(PipelineOptions options) {
    this.options = options;
  }

  /**
   * Called by Beam with the pipeline's options, in {@code Pipeline.run()} just before it validates
   * the pipeline's transforms and then calls {@link #run}. Until {@link #run}, the options name the
   * classic runner the user asked for: Beam's IOs check the runner by class name while they
   * validate (KafkaIO's exactly-once sink refuses a runner it does not know), and the pipeline runs
   * on that engine.
   */
  public static XinferRunner fromOptions(PipelineOptions options) {
    options.setRunner(BeamHooks.classicRunner(requestedRunner(options)));
    return new XinferRunner(options);
  }

  private static String requestedRunner(PipelineOptions options) {
    String requested = options.as(XinferOptions.class).getXinferRequestedRunner();
    return requested == null ? "FlinkRunner" : requested;
  }

  @Override
  public XinferPipelineResult run(Pipeline pipeline) {
    // A second Pipeline.run() with these options comes here again.
    options.setRunner(XinferRunner.class);
    // A job that does not name --sdkWorkerParallelism runs a Python worker per slot of each node.
    boolean sdkWorkersNamed = Engine.isSet(options, "sdkWorkerParallelism");
    long startNanos = System.nanoTime();
    Engine engine = Engine.forRunner(requestedRunner(options), options);

    raiseDataBufferLimit(options);
    // The EMBEDDED Java harness's end-of-job reports are not the user's failures.
    TeardownNoise.install();
    PortablePipelineOptions portable = options.as(PortablePipelineOptions.class);
    portable.setDefaultEnvironmentType(Environments.ENVIRONMENT_EMBEDDED);
    // The Java harness shares this JVM's classpath (embedded) or the jars the engine ships.
    portable.setFilesToStage(List.of());

    engine.adjust(pipeline);
    RunnerApi.Pipeline proto = PipelineTranslation.toProto(pipeline, SdkComponents.create(options));
    if (!ExperimentalOptions.hasExperiment(options, NO_COMBINER_LIFTING)) {
      // Otherwise a Combine (Count, Sum, Top...) after RunInference sends every element through
      // the runner's GroupByKey.
      proto = CombineLifting.lift(proto);
    }
    RunnerApi.Pipeline portablePipeline = DefaultArtifactResolver.INSTANCE.resolveArtifacts(proto);
    String jobName = options.getJobName();
    // A cluster's TaskManagers and executors find their loopback Fn API servers under one id.
    JobInfo jobInfo =
        JobInfo.create(
            engine.embedded()
                ? jobName + "_" + UUID.randomUUID()
                : LoopbackFnServers.CLUSTER_JOB_ID,
            jobName,
            "",
            jobOptions(options, sdkWorkersNamed));

    PortablePipelineRunner runner = engine.runner(jobInfo);
    LOG.info(
        "xinfer: running {} with Python transforms on Beam's portable {} runner ({}, streaming={})",
        engine.runnerName(),
        engine.runnerName().replace("Runner", ""),
        engine.target(),
        options.as(org.apache.beam.sdk.options.StreamingOptions.class).isStreaming());
    ExecutorService executor = DaemonThreads.singleThreadExecutor("xinfer-job-" + jobName);
    engine.prepare(jobInfo);
    CompletableFuture<PortablePipelineResult> job =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                return engine.run(runner, portablePipeline, jobInfo);
              } catch (Exception e) {
                throw new RuntimeException(e);
              }
            },
            executor);
    // The result's waits end once the engine has let go of the job (an embedded Flink shut down).
    CompletableFuture<PortablePipelineResult> released =
        job.whenComplete(
            (r, e) -> {
              executor.shutdown();
              engine.release(jobInfo);
            });
    return new XinferPipelineResult(
        engine.runnerName(), job, released, engine::cancel, engine::liveMetrics, startNanos);
  }

  /**
   * The job's options, without {@code --sdkWorkerParallelism} unless the user named it (read, its
   * default would be there): each node then runs a worker per task slot ({@link
   * LoopbackFnServers#withNodeSdkWorkers}).
   */
  static Struct jobOptions(PipelineOptions options, boolean sdkWorkersNamed) {
    Struct proto = PipelineOptionsTranslation.toProto(options);
    return sdkWorkersNamed
        ? proto
        : proto.toBuilder().removeFields(LoopbackFnServers.SDK_WORKER_PARALLELISM).build();
  }

  /**
   * The Java SDK harness sends a bundle's output in messages of {@value #DATA_BUFFER_BYTES} bytes
   * instead of Beam's 1 MB, unless {@code --experiments=data_buffer_size_limit=...} says otherwise.
   *
   * <p>Beam's runner side reads a bundle's output only once the SDK harness reports the bundle done
   * ({@code SdkHarnessClient.ActiveBundle#close} waits for the response, then drains), through a
   * queue of 100 messages; a bundle with more output than that blocks the harness's data stream and
   * the job hangs. Flink's and Spark's portable batch runners make a whole partition one bundle, so
   * with 1 MB messages a Java stage that writes more than about 100 MB per partition (500,000 rows
   * of 64 floats) hangs; with 32 MB messages the bound is about 3.2 GB.
   */
  private static void raiseDataBufferLimit(PipelineOptions options) {
    if (ExperimentalOptions.getExperimentValue(options, DATA_BUFFER_SIZE_LIMIT) == null) {
      ExperimentalOptions.addExperiment(
          options.as(ExperimentalOptions.class), DATA_BUFFER_SIZE_LIMIT + "=" + DATA_BUFFER_BYTES);
    }
  }

  @Override
  public String toString() {
    return "XinferRunner";
  }
}
