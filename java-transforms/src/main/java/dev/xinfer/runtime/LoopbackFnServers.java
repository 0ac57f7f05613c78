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
import org.apache.beam.runners.fnexecution.environment.EmbeddedEnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.EnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.ProcessEnvironmentFactory;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
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

  /** A job bundle factory whose EXTERNAL environments serve on loopback (Beam's providers else). */
  public static JobBundleFactory jobBundleFactory(JobInfo jobInfo) {
    PipelineOptions options = PipelineOptionsTranslation.fromProto(jobInfo.pipelineOptions());
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
            new EmbeddedEnvironmentFactory.Provider(options));
    return DefaultJobBundleFactory.create(jobInfo, providers);
  }

  /**
   * A stage context over a job bundle factory, as Beam's default one, that stops handing out a
   * factory once this JVM's worker pool reports that a worker died (Beam's factory keeps a dead
   * worker's environment cached, so a retried task, which Spark runs in the same context, would get
   * the dead worker again). The retired factories close with the context.
   */
  private static final class Context implements ExecutableStageContext, AutoCloseable {
    private final JobInfo jobInfo;
    private final java.util.List<JobBundleFactory> retired = new java.util.ArrayList<>();
    private JobBundleFactory jobBundleFactory;
    private long since = System.nanoTime();

    Context(JobInfo jobInfo) {
      this.jobInfo = jobInfo;
      this.jobBundleFactory = jobBundleFactory(jobInfo);
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
          retired.add(jobBundleFactory);
          jobBundleFactory = jobBundleFactory(jobInfo);
          break;
        }
      }
      since = now;
      return jobBundleFactory.forStage(executableStage);
    }

    @Override
    public synchronized void close() throws Exception {
      Exception failure = null;
      retired.add(jobBundleFactory);
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
      if (failure != null) {
        throw failure;
      }
    }
  }
}
