package dev.xinfer.pipelines.bench;

import dev.xinfer.runtime.LoopbackFnServers;
import dev.xinfer.runtime.LoopbackServerFactory;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.flink.FlinkJobServerDriver.FlinkServerConfiguration;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.runners.jobsubmission.JobInvocation;
import org.apache.beam.runners.jobsubmission.JobServerDriver;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.sdk.io.FileSystems;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.util.concurrent.ListeningExecutorService;

/**
 * Beam's Flink job server with every server it opens on 127.0.0.1: the job server of the
 * benchmark's approach 2 (a pure-Python Beam pipeline on portable Flink, {@code python -m
 * xinfer_bench beam}).
 *
 * <pre>
 * LoopbackFlinkJobServer --flink-master=[local] --job-host=127.0.0.1 --job-port=P
 *     --artifact-port=P2 --expansion-port=P3 --artifacts-dir=DIR   (FlinkJobServerDriver's flags)
 * </pre>
 *
 * <p>Beam's {@code FlinkJobServerDriver} binds its job and artifact services to all interfaces
 * whatever {@code --job-host} says ({@code ServerFactory} builds them with {@code
 * NettyServerBuilder.forPort}); only its Java expansion service honours the host. The Fn API
 * servers the runner opens for a job's SDK workers (control, data, state, logging, provisioning,
 * artifacts) bind all interfaces too, and so do two servers of the {@code [local]} Flink unless its
 * configuration names a bind host. This driver takes the same flags ({@code
 * FlinkJobServerDriver.parseArgs}) and runs jobs with Beam's {@code FlinkJobInvoker}, but: its job
 * and artifact servers bind the address {@code --job-host} names (./xinfer passes 127.0.0.1), each
 * job's Fn API servers bind 127.0.0.1 (the way xinfer's embedded runner does it, {@code
 * dev.xinfer.runtime.LoopbackFnServers}), and without {@code --flink-conf-dir} the Flink
 * configuration sets every bind host to 127.0.0.1.
 */
public final class LoopbackFlinkJobServer extends JobServerDriver {
  private static final String HOST = "127.0.0.1";

  private LoopbackFlinkJobServer(FlinkServerConfiguration config) {
    super(
        config,
        new LoopbackServerFactory(),
        new LoopbackServerFactory(),
        () -> new LoopbackFlinkJobInvoker(config));
  }

  public static void main(String[] args) {
    // As FlinkJobServerDriver.main: the standard file systems, for the staged artifacts.
    FileSystems.setDefaultPipelineOptions(PipelineOptionsFactory.create());
    List<String> flags = new ArrayList<>(Arrays.asList(args));
    if (flags.stream().noneMatch(flag -> flag.startsWith("--flink-conf-dir"))) {
      flags.add("--flink-conf-dir=" + loopbackFlinkConfDir());
    }
    FlinkServerConfiguration config = FlinkJobServerDriver.parseArgs(flags.toArray(new String[0]));
    new LoopbackFlinkJobServer(config).run();
  }

  /**
   * A Flink configuration that binds the embedded ({@code [local]}) Flink's servers to loopback.
   */
  static Path loopbackFlinkConfDir() {
    try {
      Path dir = Files.createTempDirectory("xinfer-jobserver-flink-conf-");
      dir.toFile().deleteOnExit();
      Path file = dir.resolve("config.yaml");
      Files.writeString(
          file,
          String.join(
              "\n",
              "jobmanager.bind-host: " + HOST,
              "jobmanager.rpc.address: " + HOST,
              "taskmanager.bind-host: " + HOST,
              "taskmanager.host: " + HOST,
              "rest.bind-address: " + HOST,
              "rest.address: " + HOST,
              ""),
          StandardCharsets.UTF_8);
      file.toFile().deleteOnExit();
      return dir;
    } catch (IOException e) {
      throw new UncheckedIOException("could not write the job server's Flink configuration", e);
    }
  }

  /** Beam's Flink job invoker, with each job's Fn API servers on 127.0.0.1. */
  static final class LoopbackFlinkJobInvoker extends FlinkJobInvoker {
    LoopbackFlinkJobInvoker(FlinkServerConfiguration config) {
      super(config);
    }

    @Override
    protected JobInvocation createJobInvocation(
        String invocationId,
        String retrievalToken,
        ListeningExecutorService executorService,
        RunnerApi.Pipeline pipeline,
        FlinkPipelineOptions flinkOptions,
        PortablePipelineRunner pipelineRunner) {
      // Flink's stage functions look up the job's stage-context factory by job id (the
      // invocation id); registering one first gives them loopback job bundle factories.
      LoopbackFnServers.Runner.FLINK.register(invocationId);
      JobInvocation invocation =
          super.createJobInvocation(
              invocationId,
              retrievalToken,
              executorService,
              pipeline,
              flinkOptions,
              pipelineRunner);
      invocation.addStateListener(
          event -> {
            if (JobInvocation.isTerminated(event.getState())) {
              LoopbackFnServers.Runner.FLINK.unregister(invocationId);
            }
          });
      return invocation;
    }
  }
}
