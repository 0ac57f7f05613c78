package dev.xinfer.runtime;

import static org.apache.beam.sdk.util.construction.resources.PipelineResources.detectClassPathResourcesToStage;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.runners.flink.FlinkPipelineRunner;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineRunner;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.util.construction.DefaultArtifactResolver;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.PipelineTranslation;
import org.apache.beam.sdk.util.construction.SdkComponents;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a pipeline that holds Python transforms on the portable Flink runner, in this JVM.
 *
 * <p>Users do not name this runner: {@link RunnerBootstrap} puts it in place of {@code
 * --runner=FlinkRunner} when the pipeline holds xinfer's RunInference. It translates the pipeline
 * to its portable form and hands it to Beam's {@link FlinkPipelineRunner}, the runner behind the
 * portable Flink job server, without a job server process or ports of its own. The Java stages run
 * in an EMBEDDED SDK harness inside the Flink task (no Docker); the Python stages run in the worker
 * pool the expansion service named. {@code --flinkMaster} is honoured: {@code [local]} (the
 * default) runs an embedded Flink.
 */
public final class XinferRunner extends PipelineRunner<XinferPipelineResult> {
  private static final Logger LOG = LoggerFactory.getLogger(XinferRunner.class);
  private static final String LOCAL = "[local]";

  private final PipelineOptions options;

  private XinferRunner(PipelineOptions options) {
    this.options = options;
  }

  /** Called by Beam with the pipeline's options. */
  public static XinferRunner fromOptions(PipelineOptions options) {
    return new XinferRunner(options);
  }

  @Override
  public XinferPipelineResult run(Pipeline pipeline) {
    String requested = options.as(XinferOptions.class).getXinferRequestedRunner();
    String runnerName = requested == null ? "FlinkRunner" : requested;
    FlinkPipelineOptions flink = options.as(FlinkPipelineOptions.class);
    String master = flink.getFlinkMaster();
    if (master == null || FlinkPipelineOptions.AUTO.equals(master)) {
      master = LOCAL;
      flink.setFlinkMaster(master);
    }
    boolean local = LOCAL.equals(master);

    PortablePipelineOptions portable = options.as(PortablePipelineOptions.class);
    portable.setDefaultEnvironmentType(Environments.ENVIRONMENT_EMBEDDED);
    // In-process the Java harness shares this classpath: nothing to stage or hash.
    portable.setFilesToStage(List.of());
    List<String> jarsForCluster =
        local
            ? List.of()
            : detectClassPathResourcesToStage(XinferRunner.class.getClassLoader(), options);

    RunnerApi.Pipeline proto = PipelineTranslation.toProto(pipeline, SdkComponents.create(options));
    proto = DefaultArtifactResolver.INSTANCE.resolveArtifacts(proto);
    String jobName = options.getJobName();
    JobInfo jobInfo =
        JobInfo.create(
            jobName + "_" + UUID.randomUUID(),
            jobName,
            "",
            PipelineOptionsTranslation.toProto(options));

    String confDir = flink.getFlinkConfDir();
    if (local && confDir == null) {
      confDir = loopbackFlinkConfDir();
    }
    FlinkPipelineRunner flinkRunner = new FlinkPipelineRunner(flink, confDir, jarsForCluster);
    LOG.info(
        "xinfer: running {} with Python transforms on Beam's portable Flink runner "
            + "(flinkMaster={}, streaming={})",
        runnerName,
        master,
        flink.isStreaming());
    ExecutorService executor =
        Executors.newSingleThreadExecutor(
            r -> {
              Thread t = new Thread(r, "xinfer-flink-job-" + jobName);
              t.setDaemon(true);
              return t;
            });
    if (local) {
      LoopbackFnServers.registerForFlinkJob(jobInfo);
    }
    RunnerApi.Pipeline portablePipeline = proto;
    CompletableFuture<PortablePipelineResult> job =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                return flinkRunner.run(portablePipeline, jobInfo);
              } catch (Exception e) {
                throw new RuntimeException(e);
              }
            },
            executor);
    job.whenComplete(
        (r, e) -> {
          executor.shutdown();
          LoopbackFnServers.unregisterFlinkJob(jobInfo);
        });
    return new XinferPipelineResult(runnerName, job);
  }

  /**
   * A Flink configuration for the embedded mini-cluster that binds its servers (blob server, RPC,
   * REST) to 127.0.0.1 rather than all interfaces. {@code --flinkConfDir} replaces it.
   */
  static String loopbackFlinkConfDir() {
    try {
      Path dir = Files.createTempDirectory("xinfer-flink-conf-");
      Files.writeString(
          dir.resolve("config.yaml"),
          String.join(
              "\n",
              "# Written by xinfer for the embedded Flink: every server on loopback.",
              "jobmanager.bind-host: 127.0.0.1",
              "jobmanager.rpc.address: 127.0.0.1",
              "taskmanager.bind-host: 127.0.0.1",
              "taskmanager.host: 127.0.0.1",
              "rest.bind-address: 127.0.0.1",
              "rest.address: 127.0.0.1",
              ""),
          StandardCharsets.UTF_8);
      dir.toFile().deleteOnExit();
      dir.resolve("config.yaml").toFile().deleteOnExit();
      return dir.toString();
    } catch (IOException e) {
      throw new UncheckedIOException("xinfer could not write a Flink configuration", e);
    }
  }

  @Override
  public String toString() {
    return "XinferRunner";
  }
}
