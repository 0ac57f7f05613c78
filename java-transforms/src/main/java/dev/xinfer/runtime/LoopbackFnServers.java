package dev.xinfer.runtime;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.model.pipeline.v1.RunnerApi.StandardEnvironments;
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
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Binds the Fn API servers of a job's Python stages (control, data, state, logging, provisioning,
 * artifacts) to 127.0.0.1.
 *
 * <p>Beam's {@code ServerFactory.createDefault()} (see {@link BeamHooks}), which the EXTERNAL
 * environment uses, binds them to all interfaces ({@code NettyServerBuilder.forPort}), and the
 * Flink and Spark runners build their bundle factories with no way to pass another. Both look up
 * the stage-context factory of a job by job id in a static map; registering one for our job id
 * before the job starts gives job bundle factories whose EXTERNAL environments serve on loopback.
 * An embedded engine's jobs are registered by their job id in the launching JVM; a cluster's
 * TaskManagers and executors deserialize a job's stage functions in a class loader of their own,
 * where {@link XinferOptionsRegistrar} registers {@link #CLUSTER_JOB_ID}, the id xinfer gives every
 * cluster job, before any stage opens.
 */
public final class LoopbackFnServers {
  private static final int KEEP_ALIVE_TIME_SEC = 20;

  /**
   * The job id of every job xinfer submits to a cluster. A TaskManager or executor holds each job's
   * classes, and so Beam's map of stage-context factories, in a class loader of that job alone, so
   * one id serves every job.
   */
  public static final String CLUSTER_JOB_ID = "xinfer-cluster-job";

  private static final String FLINK_FACTORY =
      "org.apache.beam.runners.flink.translation.functions.FlinkExecutableStageContextFactory";
  private static final String SPARK_FACTORY =
      "org.apache.beam.runners.spark.translation.SparkExecutableStageContextFactory";

  private LoopbackFnServers() {}

  /**
   * Registers loopback Fn API servers for cluster jobs ({@link #CLUSTER_JOB_ID}) with the Flink and
   * Spark runners whose classes this class loader has (none, neither or both).
   */
  static void registerClusterJobs() {
    ClassLoader loader = LoopbackFnServers.class.getClassLoader();
    registerClusterJobs(loader, FLINK_FACTORY, "org.apache.flink.api.java.ExecutionEnvironment");
    registerClusterJobs(loader, SPARK_FACTORY, null);
  }

  /**
   * As the runner's own factory: Flink's releases environments synchronously off Flink's parent
   * class loader ({@code parentClass}), Spark's always asynchronously.
   */
  @SuppressWarnings("unchecked")
  private static void registerClusterJobs(
      ClassLoader loader, String factoryClass, @Nullable String parentClass) {
    Class<? extends ExecutableStageContext.Factory> factory;
    @Nullable ClassLoader parent;
    try {
      factory =
          (Class<? extends ExecutableStageContext.Factory>)
              Class.forName(factoryClass, false, loader);
      parent =
          parentClass == null ? null : Class.forName(parentClass, false, loader).getClassLoader();
    } catch (ClassNotFoundException | LinkageError e) {
      return; // this runner is not on the class path
    }
    register(
        factory,
        CLUSTER_JOB_ID,
        caller -> parentClass != null && caller.getClass().getClassLoader() != parent);
  }

  /**
   * Makes the portable runner whose stage-context factory is {@code factoryClass} (Flink's or
   * Spark's) run job {@code jobInfo}'s stages with loopback Fn API servers.
   */
  static void register(
      Class<? extends ExecutableStageContext.Factory> factoryClass,
      JobInfo jobInfo,
      SerializableFunction<Object, Boolean> isReleaseSynchronous) {
    register(factoryClass, jobInfo.jobId(), isReleaseSynchronous);
  }

  /** As {@link #register(Class, JobInfo, SerializableFunction)}, by job id (a job server's). */
  public static void register(
      Class<? extends ExecutableStageContext.Factory> factoryClass,
      String jobId,
      SerializableFunction<Object, Boolean> isReleaseSynchronous) {
    ExecutableStageContext.Factory factory =
        ReferenceCountingExecutableStageContextFactory.create(
            LoopbackFnServers::createContext, isReleaseSynchronous);
    BeamHooks.jobFactories(factoryClass).put(jobId, factory);
  }

  static void unregister(
      Class<? extends ExecutableStageContext.Factory> factoryClass, JobInfo jobInfo) {
    unregister(factoryClass, jobInfo.jobId());
  }

  public static void unregister(
      Class<? extends ExecutableStageContext.Factory> factoryClass, String jobId) {
    BeamHooks.jobFactories(factoryClass).remove(jobId);
  }

  /** Beam's gRPC server factory, bound to 127.0.0.1 (e.g. for a job server's own services). */
  public static ServerFactory serverFactory() {
    return new LoopbackServerFactory();
  }

  private static ExecutableStageContext createContext(JobInfo jobInfo) {
    return new Context(jobBundleFactory(jobInfo));
  }

  /** A job bundle factory whose EXTERNAL environments serve on loopback (Beam's providers else). */
  static JobBundleFactory jobBundleFactory(JobInfo jobInfo) {
    PipelineOptions options = PipelineOptionsTranslation.fromProto(jobInfo.pipelineOptions());
    // Beam's default providers, with the EXTERNAL one on loopback.
    Map<String, EnvironmentFactory.Provider> providers =
        Map.of(
            BeamUrns.getUrn(StandardEnvironments.Environments.DOCKER),
            new DockerEnvironmentFactory.Provider(options),
            BeamUrns.getUrn(StandardEnvironments.Environments.PROCESS),
            new ProcessEnvironmentFactory.Provider(options),
            BeamUrns.getUrn(StandardEnvironments.Environments.EXTERNAL),
            new LoopbackExternalProvider(),
            Environments.ENVIRONMENT_EMBEDDED,
            new EmbeddedEnvironmentFactory.Provider(options));
    return DefaultJobBundleFactory.create(jobInfo, providers);
  }

  /** The EXTERNAL (worker pool) environment, with its servers on loopback. */
  private static final class LoopbackExternalProvider extends ExternalEnvironmentFactory.Provider {
    @Override
    public ServerFactory getServerFactory() {
      return new LoopbackServerFactory();
    }
  }

  /** A stage context over one job bundle factory, as Beam's default one. */
  private static final class Context implements ExecutableStageContext, AutoCloseable {
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

  /** Beam's default gRPC server factory, bound to 127.0.0.1 instead of all interfaces. */
  static final class LoopbackServerFactory extends ServerFactory {
    private static final String HOST = "127.0.0.1";

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
      if (!(address instanceof InetSocketAddress)) {
        throw new IllegalArgumentException(
            "xinfer's loopback server factory needs a host:port URL, got " + descriptor.getUrl());
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
