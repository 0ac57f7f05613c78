package dev.xinfer.pipelines.bench;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.reflect.Field;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.RunnerApi.StandardEnvironments;
import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.flink.FlinkJobServerDriver.FlinkServerConfiguration;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.runners.flink.translation.functions.FlinkExecutableStageContextFactory;
import org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory;
import org.apache.beam.runners.fnexecution.control.ExecutableStageContext;
import org.apache.beam.runners.fnexecution.control.JobBundleFactory;
import org.apache.beam.runners.fnexecution.control.ReferenceCountingExecutableStageContextFactory;
import org.apache.beam.runners.fnexecution.control.StageBundleFactory;
import org.apache.beam.runners.fnexecution.environment.DockerEnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.EmbeddedEnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.EnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.ExternalEnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.ProcessEnvironmentFactory;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.jobsubmission.JobInvocation;
import org.apache.beam.runners.jobsubmission.JobServerDriver;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.sdk.io.FileSystems;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.util.concurrent.ListeningExecutorService;
import org.apache.flink.api.java.ExecutionEnvironment;

/**
 * Beam's Flink job server with every server it opens on 127.0.0.1: the job server of the
 * benchmark's approach 2 (a pure-Python Beam pipeline on portable Flink, {@code python -m
 * xinfer.bench beam}).
 *
 * <pre>
 * LoopbackFlinkJobServer --flink-master=[local] --job-host=127.0.0.1 --job-port=P
 *     --artifact-port=P2 --expansion-port=P3 --artifacts-dir=DIR   (FlinkJobServerDriver's flags)
 * </pre>
 *
 * <p>Beam 2.62's {@code FlinkJobServerDriver} binds its job and artifact services to all interfaces
 * whatever {@code --job-host} says ({@code ServerFactory} builds them with {@code
 * NettyServerBuilder.forPort}); only its Java expansion service honours the host. The Fn API
 * servers the runner opens for a job's SDK workers (control, data, state, logging, provisioning,
 * artifacts) bind all interfaces too, and so do two servers of the {@code [local]} Flink unless its
 * configuration names a bind host. This driver takes the same flags ({@code
 * FlinkJobServerDriver.parseArgs}) and runs jobs with Beam's {@code FlinkJobInvoker}, but: its job
 * and artifact servers bind the loopback address of {@code --job-host} (anything else is refused),
 * each job's Fn API servers bind 127.0.0.1 (the way xinfer's embedded runner does it, {@code
 * dev.xinfer.runtime.LoopbackFnServers}), and without {@code --flink-conf-dir} the Flink
 * configuration sets every bind host to 127.0.0.1.
 */
public final class LoopbackFlinkJobServer extends JobServerDriver {
  private static final String HOST = "127.0.0.1";
  private static final int KEEP_ALIVE_TIME_SEC = 20;

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
      ConcurrentMap<String, ExecutableStageContext.Factory> factories = jobFactories();
      factories.put(
          invocationId,
          ReferenceCountingExecutableStageContextFactory.create(
              jobInfo -> new Context(jobBundleFactory(jobInfo)),
              // As Flink's own factory: release synchronously off Flink's parent class loader.
              caller ->
                  caller.getClass().getClassLoader()
                      != ExecutionEnvironment.class.getClassLoader()));
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
              factories.remove(invocationId);
            }
          });
      return invocation;
    }
  }

  @SuppressWarnings("unchecked")
  private static ConcurrentMap<String, ExecutableStageContext.Factory> jobFactories() {
    try {
      Field field = FlinkExecutableStageContextFactory.class.getDeclaredField("jobFactories");
      field.setAccessible(true);
      return (ConcurrentMap<String, ExecutableStageContext.Factory>) field.get(null);
    } catch (ReflectiveOperationException | ClassCastException e) {
      throw new IllegalStateException(
          "cannot reach FlinkExecutableStageContextFactory.jobFactories (built for Beam 2.62.0)",
          e);
    }
  }

  /** Beam's default environment providers, with the EXTERNAL (worker pool) one on loopback. */
  static JobBundleFactory jobBundleFactory(JobInfo jobInfo) {
    PipelineOptions options = PipelineOptionsTranslation.fromProto(jobInfo.pipelineOptions());
    Map<String, EnvironmentFactory.Provider> providers =
        Map.of(
            BeamUrns.getUrn(StandardEnvironments.Environments.DOCKER),
            new DockerEnvironmentFactory.Provider(options),
            BeamUrns.getUrn(StandardEnvironments.Environments.PROCESS),
            new ProcessEnvironmentFactory.Provider(options),
            BeamUrns.getUrn(StandardEnvironments.Environments.EXTERNAL),
            new ExternalEnvironmentFactory.Provider() {
              @Override
              public ServerFactory getServerFactory() {
                return new LoopbackServerFactory();
              }
            },
            Environments.ENVIRONMENT_EMBEDDED,
            new EmbeddedEnvironmentFactory.Provider(options));
    return DefaultJobBundleFactory.create(jobInfo, providers);
  }

  /** A stage context over one job bundle factory, as Beam's default one. */
  private static final class Context implements ExecutableStageContext {
    private final JobBundleFactory jobBundleFactory;

    Context(JobBundleFactory jobBundleFactory) {
      this.jobBundleFactory = jobBundleFactory;
    }

    @Override
    public StageBundleFactory getStageBundleFactory(ExecutableStage executableStage) {
      return jobBundleFactory.forStage(executableStage);
    }

    @Override
    public void close() throws Exception {
      jobBundleFactory.close();
    }
  }

  /** Beam's default gRPC server factory, bound to loopback instead of all interfaces. */
  static final class LoopbackServerFactory extends ServerFactory {
    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
        throws IOException {
      Server server =
          start(services, new InetSocketAddress(InetAddress.getByName(HOST), /* any port */ 0));
      descriptor.setUrl(HOST + ":" + server.getPort());
      return server;
    }

    @Override
    public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
      if (!(address instanceof InetSocketAddress)
          || ((InetSocketAddress) address).getAddress() == null
          || !((InetSocketAddress) address).getAddress().isLoopbackAddress()) {
        throw new IllegalArgumentException(
            "this job server binds loopback only: use --job-host=127.0.0.1, not "
                + descriptor.getUrl());
      }
      return start(services, (InetSocketAddress) address);
    }

    private static Server start(List<BindableService> services, InetSocketAddress address)
        throws IOException {
      NettyServerBuilder builder =
          NettyServerBuilder.forAddress(address)
              // As Beam's factory: message size is bounded by the layers above.
              .maxInboundMessageSize(Integer.MAX_VALUE)
              .permitKeepAliveTime(KEEP_ALIVE_TIME_SEC, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(
            ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }
}
