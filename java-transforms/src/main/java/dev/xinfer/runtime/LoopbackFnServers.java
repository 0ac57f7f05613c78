package dev.xinfer.runtime;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.portable.XinferOptionsRegistrar;
import dev.xinfer.runtime.python.PythonServices;
import java.time.Duration;
import java.util.Map;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.RunnerApi.StandardEnvironments;
import org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory;
import org.apache.beam.runners.fnexecution.control.ExecutableStageContext;
import org.apache.beam.runners.fnexecution.control.JobBundleFactory;
import org.apache.beam.runners.fnexecution.control.ReferenceCountingExecutableStageContextFactory;
import org.apache.beam.runners.fnexecution.control.StageBundleFactory;
import org.apache.beam.runners.fnexecution.environment.DockerEnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.EnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.ProcessEnvironmentFactory;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.ExecutorOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Value;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

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
@Internal
public final class LoopbackFnServers {
  private static final Logger LOG = LoggerFactory.getLogger(LoopbackFnServers.class);

  /**
   * The job id of every job xinfer submits to a cluster. A TaskManager or executor holds each job's
   * classes, and so Beam's map of stage-context factories, in a class loader of that job alone, so
   * one id serves every job.
   */
  public static final String CLUSTER_JOB_ID = "xinfer-cluster-job";

  private LoopbackFnServers() {}

  /**
   * The portable runners whose stage-context factory xinfer replaces: Flink's and Spark's. Each
   * names its factory and parent classes, so that a class loader without that runner (a Spark
   * executor has no Flink) is told apart from one with it.
   */
  public enum Runner {
    /** Flink's: releases environments synchronously off Flink's parent class loader. */
    FLINK(
        "org.apache.beam.runners.flink.translation.functions.FlinkExecutableStageContextFactory",
        "org.apache.flink.api.java.ExecutionEnvironment"),
    /** Spark's: always releases environments asynchronously. */
    SPARK("org.apache.beam.runners.spark.translation.SparkExecutableStageContextFactory", null);

    private final String factoryClass;
    private final @Nullable String parentClass;

    Runner(String factoryClass, @Nullable String parentClass) {
      this.factoryClass = factoryClass;
      this.parentClass = parentClass;
    }

    /**
     * Makes this runner run job {@code jobId}'s stages (a job id, or a job server's invocation id)
     * with loopback Fn API servers, until {@link #unregister}.
     *
     * @throws IllegalStateException when this runner's classes are not on the class path
     */
    public void register(String jobId) {
      register(LoopbackFnServers.class.getClassLoader(), jobId);
    }

    /** Undoes {@link #register} once the job has ended. */
    public void unregister(String jobId) {
      BeamHooks.jobFactories(factory(LoopbackFnServers.class.getClassLoader())).remove(jobId);
    }

    /** Whether {@code loader} has this runner. */
    boolean isIn(ClassLoader loader) {
      try {
        factory(loader);
        return true;
      } catch (IllegalStateException e) {
        return false;
      }
    }

    private void register(ClassLoader loader, String jobId) {
      Class<? extends ExecutableStageContext.Factory> factory = factory(loader);
      @Nullable ClassLoader parent =
          parentClass == null ? null : load(loader, parentClass).getClassLoader();
      boolean synchronousOffParent = parentClass != null;
      SerializableFunction<Object, Boolean> isReleaseSynchronous =
          caller -> synchronousOffParent && caller.getClass().getClassLoader() != parent;
      BeamHooks.jobFactories(factory)
          .put(
              jobId,
              ReferenceCountingExecutableStageContextFactory.create(
                  LoopbackFnServers::createContext, isReleaseSynchronous));
    }

    @SuppressWarnings("unchecked")
    Class<? extends ExecutableStageContext.Factory> factory(ClassLoader loader) {
      return (Class<? extends ExecutableStageContext.Factory>) load(loader, factoryClass);
    }

    private static Class<?> load(ClassLoader loader, String name) {
      try {
        return Class.forName(name, false, loader);
      } catch (ClassNotFoundException | LinkageError e) {
        throw new IllegalStateException(
            name
                + " is not on the class path: add the runner's jar (beam-runners-flink or "
                + "beam-runners-spark) to the job's class path",
            e);
      }
    }
  }

  /**
   * Registers loopback Fn API servers for cluster jobs ({@link #CLUSTER_JOB_ID}) with the runners
   * whose classes this class loader has (Flink's, Spark's, both or neither).
   */
  public static void registerClusterJobs() {
    ClassLoader loader = LoopbackFnServers.class.getClassLoader();
    for (Runner runner : Runner.values()) {
      if (runner.isIn(loader)) {
        runner.register(loader, CLUSTER_JOB_ID);
      }
    }
  }

  /** Environments of a run before this JVM, by the environment of this JVM that serves them. */
  private static final Map<RunnerApi.Environment, RunnerApi.Environment> REPLACED =
      new java.util.concurrent.ConcurrentHashMap<>();

  /**
   * Serves stages restored from a checkpoint of another JVM (a Spark job run again after its driver
   * died) with this JVM's environments: {@code replaced} maps each environment the restored stages
   * name (the dead JVM's worker pool, its port and secret) to this JVM's.
   */
  public static void replaceEnvironments(
      Map<RunnerApi.Environment, RunnerApi.Environment> replaced) {
    REPLACED.putAll(replaced);
  }

  /** The environment that serves a stage of {@code environment} in this JVM. */
  public static RunnerApi.Environment current(RunnerApi.Environment environment) {
    return REPLACED.getOrDefault(environment, environment);
  }

  private static ExecutableStageContext createContext(JobInfo jobInfo) {
    return new Context(jobInfo);
  }

  /** The variable giving the number of task slots (Spark: cores) of the node this JVM runs on. */
  static final String NODE_SLOTS = "XINFER_NODE_SLOTS";

  /** The key of {@code --sdkWorkerParallelism} in a job's options. */
  public static final String SDK_WORKER_PARALLELISM = "beam:option:sdk_worker_parallelism:v1";

  private static volatile boolean nodeWorkersLogged;

  /**
   * {@code jobInfo} with one Python SDK worker per task slot of this node ({@code
   * --sdkWorkerParallelism} the node's {@value #NODE_SLOTS}, as {@code ./xinfer cluster up} sets it
   * for each TaskManager and Spark worker), unless the job names {@code --sdkWorkerParallelism}:
   * Beam's default, one worker per node, would run every slot's Python work on one process (one
   * core). Unchanged where the node does not say its slots (an embedded engine).
   */
  static JobInfo withNodeSdkWorkers(JobInfo jobInfo, @Nullable String nodeSlots) {
    if (nodeSlots == null
        || nodeSlots.isEmpty()
        || jobInfo.pipelineOptions().containsFields(SDK_WORKER_PARALLELISM)) {
      return jobInfo;
    }
    int slots;
    try {
      slots = Integer.parseInt(nodeSlots.trim());
    } catch (NumberFormatException e) {
      slots = 0;
    }
    if (slots < 1) {
      throw new IllegalStateException(
          NODE_SLOTS
              + "='"
              + nodeSlots
              + "' in this node's environment is not a number of task slots: set it to the"
              + " node's slots (a positive number), or unset it for one Python worker per node");
    }
    if (!nodeWorkersLogged) {
      nodeWorkersLogged = true;
      LOG.info(
          "xinfer: {} Python SDK worker(s) per Python environment on this node, one per task slot"
              + " ({}; --sdkWorkerParallelism sets another number)",
          slots,
          NODE_SLOTS);
    }
    return JobInfo.create(
        jobInfo.jobId(),
        jobInfo.jobName(),
        jobInfo.retrievalToken(),
        jobInfo.pipelineOptions().toBuilder()
            .putFields(SDK_WORKER_PARALLELISM, Value.newBuilder().setNumberValue(slots).build())
            .build());
  }

  /** A job bundle factory whose EXTERNAL environments serve on loopback (Beam's providers else). */
  public static JobBundleFactory jobBundleFactory(JobInfo jobInfo) {
    return jobBundleFactory(
        jobInfo, PipelineOptionsTranslation.fromProto(jobInfo.pipelineOptions()));
  }

  /**
   * As {@link #jobBundleFactory(JobInfo)}, with {@code options} for its environments: the EMBEDDED
   * Java harness runs its work on {@code options}' {@link
   * ExecutorOptions#getScheduledExecutorService}.
   */
  static JobBundleFactory jobBundleFactory(JobInfo jobInfo, PipelineOptions options) {
    // Beam's default providers, with the EXTERNAL one on loopback and a bounded wait for workers.
    Map<String, EnvironmentFactory.Provider> providers =
        Map.of(
            BeamUrns.getUrn(StandardEnvironments.Environments.DOCKER),
            new DockerEnvironmentFactory.Provider(options),
            BeamUrns.getUrn(StandardEnvironments.Environments.PROCESS),
            new ProcessEnvironmentFactory.Provider(options),
            BeamUrns.getUrn(StandardEnvironments.Environments.EXTERNAL),
            new BoundedExternalEnvironmentFactory.Provider(
                Duration.ofSeconds(
                    options.as(XinferOptions.class).getXinferServiceStartTimeoutSeconds())),
            Environments.ENVIRONMENT_EMBEDDED,
            new EmbeddedEnvironments.Provider(options));
    return DefaultJobBundleFactory.create(jobInfo, providers);
  }

  /**
   * The Python SDK workers per environment that a job's stage context runs in this JVM: {@code
   * --sdkWorkerParallelism} (as the node sets it, {@link #withNodeSdkWorkers}; 0 is Beam's "the
   * cores but one").
   */
  static int sdkWorkers(JobInfo jobInfo) {
    int workers =
        PipelineOptionsTranslation.fromProto(jobInfo.pipelineOptions())
            .as(PortablePipelineOptions.class)
            .getSdkWorkerParallelism();
    return workers > 0 ? workers : Math.max(Runtime.getRuntime().availableProcessors() - 1, 1);
  }

  /** {@code jobInfo} with one SDK worker per environment. */
  private static JobInfo oneSdkWorker(JobInfo jobInfo) {
    return JobInfo.create(
        jobInfo.jobId(),
        jobInfo.jobName(),
        jobInfo.retrievalToken(),
        jobInfo.pipelineOptions().toBuilder()
            .putFields(SDK_WORKER_PARALLELISM, Value.newBuilder().setNumberValue(1).build())
            .build());
  }

  /**
   * A stage context, as Beam's default one, over one job bundle factory per SDK worker: the tasks
   * of a stage take the workers in turn, per environment, so that a node's N Python tasks run on
   * its N workers (Beam's one factory of N workers hands them out in turn over every stage, Java
   * stages too, so two Python tasks could share a worker while another idles).
   *
   * <p>It stops handing out its factories once this JVM's worker pool reports that a worker died
   * (Beam's factory keeps a dead worker's environment cached, so a retried task, which Spark runs
   * in the same context, would get the dead worker again). The retired factories close with the
   * context.
   */
  private static final class Context implements ExecutableStageContext, AutoCloseable {
    private final JobInfo jobInfo;
    private final int workers;
    private final java.util.List<JobBundleFactory> retired = new java.util.ArrayList<>();
    private final Map<RunnerApi.Environment, Integer> turns = new java.util.HashMap<>();
    private java.util.List<JobBundleFactory> factories;
    private long since = System.nanoTime();

    /**
     * The executors of the factories' EMBEDDED Java harnesses. A harness stops its executor with
     * {@code shutdown()}, which leaves its bundle-finalization task ({@code FinalizeBundleHandler},
     * an endless loop that only an interrupt ends) running: on a TaskManager that thread held each
     * finished job's class loader (Beam, gRPC and their classes, about 40 MB of metaspace) for the
     * JVM's life (found with a heap dump, {@code ./xinfer soak}). {@link #close} interrupts them
     * once the factories have closed: {@link EmbeddedEnvironments} waits, at an environment's
     * close, for its harness to return (the harness drains its logging stream on this executor
     * before it returns; interrupted earlier, that drain printed a stack trace).
     */
    private final java.util.List<java.util.concurrent.ExecutorService> harnessExecutors =
        new java.util.ArrayList<>();

    Context(JobInfo jobInfo) {
      JobInfo onNode = withNodeSdkWorkers(jobInfo, System.getenv(NODE_SLOTS));
      this.workers = sdkWorkers(onNode);
      this.jobInfo = oneSdkWorker(onNode);
      this.factories = newFactories();
    }

    private java.util.List<JobBundleFactory> newFactories() {
      java.util.List<JobBundleFactory> made = new java.util.ArrayList<>();
      for (int i = 0; i < workers; i++) {
        PipelineOptions options = PipelineOptionsTranslation.fromProto(jobInfo.pipelineOptions());
        harnessExecutors.add(options.as(ExecutorOptions.class).getScheduledExecutorService());
        made.add(jobBundleFactory(jobInfo, options));
      }
      return made;
    }

    @Override
    public synchronized StageBundleFactory getStageBundleFactory(ExecutableStage executableStage) {
      long now = System.nanoTime();
      for (String notice : PythonServices.noticesSince(since)) {
        if (notice.contains(" died")) {
          LOG.warn(
              "xinfer: a Python SDK worker of job {} died; its next tasks get new workers ({})",
              jobInfo.jobName(),
              notice);
          retired.addAll(factories);
          factories = newFactories();
          break;
        }
      }
      since = now;
      int turn = turns.merge(executableStage.getEnvironment(), 1, Integer::sum) - 1;
      return factories.get(turn % factories.size()).forStage(executableStage);
    }

    @Override
    public synchronized void close() throws Exception {
      Exception failure = null;
      retired.addAll(factories);
      factories = java.util.List.of();
      for (JobBundleFactory factory : retired) {
        try {
          factory.close();
        } catch (Exception e) {
          if (failure == null) {
            failure = e;
          } else {
            failure.addSuppressed(e);
          }
        }
      }
      retired.clear();
      // After the harnesses have returned (EmbeddedEnvironments' close waits for them).
      harnessExecutors.forEach(java.util.concurrent.ExecutorService::shutdownNow);
      harnessExecutors.clear();
      if (failure != null) {
        throw failure;
      }
    }
  }
}
