package dev.xinfer.runtime.flink;

import dev.xinfer.runtime.ClusterJars;
import dev.xinfer.runtime.LoopbackFnServers;
import dev.xinfer.runtime.PrivateTempDirs;
import dev.xinfer.runtime.portable.Engine;
import dev.xinfer.runtime.python.PythonServices;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.runners.flink.FlinkPipelineRunner;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.beam.sdk.options.ExperimentalOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.construction.SplittableParDo;
import org.apache.flink.core.execution.JobClient;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Flink through Beam's {@link FlinkPipelineRunner}: {@code --flinkMaster=[local]} (the default)
 * runs an embedded Flink, {@code host:port} submits to a running JobManager. A streaming job's
 * bundles last at most {@value #STREAMING_BUNDLE_MILLIS} ms unless {@code --maxBundleTimeMills}
 * says otherwise.
 */
@Internal
public final class FlinkEngine implements Engine {
  private static final String LOCAL = "[local]";

  /**
   * {@code --maxBundleTimeMills} of a streaming job unless the user sets it. Beam's default, 1000
   * ms, holds each record up to a second in every fused stage: about 2 s end to end for a Python
   * model between Java stages. Blocks keep the cost per bundle low, and {@code --maxBundleSize}
   * still caps a bundle at high rates.
   */
  static final long STREAMING_BUNDLE_MILLIS = 10;

  private final PipelineOptions options;
  private final FlinkPipelineOptions flink;
  private final @Nullable String userConfDir;
  private final CompletableFuture<JobClient> jobClient = new CompletableFuture<>();

  public FlinkEngine(PipelineOptions options) {
    this.options = options;
    this.flink = options.as(FlinkPipelineOptions.class);
    this.userConfDir = flink.getFlinkConfDir();
    String master = flink.getFlinkMaster();
    if (master == null || FlinkPipelineOptions.AUTO.equals(master)) {
      flink.setFlinkMaster(LOCAL);
    }
    if (flink.isStreaming() && !Engine.isSet(options, "maxBundleTimeMills")) {
      flink.setMaxBundleTimeMills(STREAMING_BUNDLE_MILLIS);
    }
  }

  @Override
  public String runnerName() {
    return "FlinkRunner";
  }

  @Override
  public String target() {
    return "flinkMaster=" + flink.getFlinkMaster();
  }

  @Override
  public boolean embedded() {
    return LOCAL.equals(flink.getFlinkMaster());
  }

  /**
   * In streaming, unbounded reads (KafkaIO) run as native Flink sources, as with {@code
   * --experiments=use_deprecated_read}: as splittable DoFns inside the portable runner's SDK
   * harness they stall (the residual of a resumed read is not picked up again), so no records come
   * through. {@code --experiments=use_sdf_read} keeps them splittable.
   */
  @Override
  public void adjust(Pipeline pipeline) {
    if (flink.isStreaming() && !ExperimentalOptions.hasExperiment(options, "use_sdf_read")) {
      // Bounded reads become native too; Flink's streaming translator runs both kinds.
      SplittableParDo.convertReadBasedSplittableDoFnsToPrimitiveReads(pipeline);
    }
  }

  @Override
  public PortablePipelineRunner runner(JobInfo jobInfo) {
    String confDir = xinferConfDir(userConfDir, embedded());
    // Beam's FlinkPipelineRunner prefers --flinkConfDir to the directory it is given; xinfer's
    // holds the user's configuration too.
    flink.setFlinkConfDir(confDir);
    // A cluster's TaskManagers run the Java stages with the jars this JVM runs on.
    if (!embedded()) {
      checkJobManager(flink.getFlinkMaster());
    }
    List<String> jars = embedded() ? List.of() : ClusterJars.ofThisJvm(options);
    return new FlinkPipelineRunner(flink, confDir, jars);
  }

  /** Fails fast, with the command that starts one, when no JobManager answers at the master. */
  static void checkJobManager(String master) {
    String hostPort = master.replaceFirst("^https?://", "");
    if (!hostPort.contains(":")) {
      hostPort = hostPort + ":8081";
    }
    try {
      PythonServices.checkReachable(hostPort, java.time.Duration.ofSeconds(5));
    } catch (IllegalStateException e) {
      throw new IllegalStateException(
          String.format(
              "No Flink JobManager answers at --flinkMaster=%s. Start the project's cluster with "
                  + "`./xinfer cluster up flink`, or pass the REST address of yours "
                  + "(--flinkMaster=[local] runs an embedded Flink).",
              master),
          e);
    }
  }

  @Override
  public void prepare(JobInfo jobInfo) {
    if (embedded()) {
      LoopbackFnServers.Runner.FLINK.register(jobInfo.jobId());
    }
  }

  @Override
  public PortablePipelineResult run(
      PortablePipelineRunner runner, RunnerApi.Pipeline pipeline, JobInfo jobInfo)
      throws Exception {
    FlinkJobClients.expectOnThisThread()
        .whenComplete(
            (client, error) -> {
              if (client != null) {
                jobClient.complete(client);
              }
            });
    try {
      return runner.run(pipeline, jobInfo);
    } finally {
      FlinkJobClients.forgetThisThread();
    }
  }

  @Override
  public boolean cancel() {
    JobClient client = jobClient.getNow(null);
    if (client == null) {
      return false;
    }
    client.cancel().join();
    return true;
  }

  /**
   * None: while a portable streaming job runs, Flink's {@code JobClient.getAccumulators()} holds no
   * Beam metrics accumulator (checked on the embedded Flink 1.19 with the Beam of {@link
   * dev.xinfer.runtime.BeamHooks#BEAM_VERSION}); a finished batch job's result has them.
   */
  @Override
  public @Nullable MetricResults liveMetrics() {
    return null;
  }

  @Override
  public void release(JobInfo jobInfo) {
    if (embedded()) {
      LoopbackFnServers.Runner.FLINK.unregister(jobInfo.jobId());
    }
  }

  /**
   * The Flink configuration the job is submitted with: the user's ({@code --flinkConfDir}), or for
   * the embedded mini-cluster one that binds its servers (blob server, RPC, REST) to 127.0.0.1
   * rather than all interfaces; either way with xinfer's job listener, which lets a running job be
   * cancelled.
   */
  static String xinferConfDir(String userConfDir, boolean embedded) {
    try {
      Path dir = PrivateTempDirs.create("xinfer-flink-conf-");
      String fileName = "config.yaml";
      StringBuilder config = new StringBuilder();
      if (userConfDir != null) {
        for (String name : List.of("config.yaml", "flink-conf.yaml")) {
          Path file = Path.of(userConfDir, name);
          if (Files.exists(file)) {
            fileName = name;
            config.append(Files.readString(file, StandardCharsets.UTF_8)).append('\n');
            break;
          }
        }
      } else if (embedded) {
        config.append(
            String.join(
                "\n",
                "# Written by xinfer for the embedded Flink: every server on loopback.",
                "jobmanager.bind-host: 127.0.0.1",
                "jobmanager.rpc.address: 127.0.0.1",
                "taskmanager.bind-host: 127.0.0.1",
                "taskmanager.host: 127.0.0.1",
                "rest.bind-address: 127.0.0.1",
                "rest.address: 127.0.0.1",
                "# Uploads and the web UI's files in this run's private folder, not /tmp.",
                "web.tmpdir: " + dir,
                ""));
      }
      config
          .append("# Added by xinfer: hands it the job's client, so a job can be cancelled.\n")
          .append("execution.job-listeners: ")
          .append(FlinkJobClients.class.getName())
          .append('\n');
      Path file = dir.resolve(fileName);
      Files.writeString(file, config.toString(), StandardCharsets.UTF_8);
      return dir.toString();
    } catch (IOException e) {
      throw new UncheckedIOException("xinfer could not write a Flink configuration", e);
    }
  }
}
