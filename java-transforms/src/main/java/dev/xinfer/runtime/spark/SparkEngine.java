package dev.xinfer.runtime.spark;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.ClusterJars;
import dev.xinfer.runtime.LoopbackFnServers;
import dev.xinfer.runtime.PrivateTempDirs;
import dev.xinfer.runtime.portable.Engine;
import dev.xinfer.runtime.python.ServiceSecret;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.core.metrics.MetricsContainerStepMap;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.runners.spark.SparkPipelineOptions;
import org.apache.beam.runners.spark.SparkPipelineRunner;
import org.apache.beam.runners.spark.metrics.MetricsAccumulator;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.beam.sdk.options.FileStagingOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.util.construction.SplittableParDo;
import org.apache.spark.streaming.StreamingContext;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Spark through Beam's {@link SparkPipelineRunner}: {@code --sparkMaster=local[N]} (the default is
 * {@code local[4]}) runs Spark inside this JVM, {@code spark://host:port} submits to a standalone
 * master.
 */
@Internal
public final class SparkEngine implements Engine {
  /**
   * The JVM flags Spark 3.2 needs on Java 17 (Spark's own launcher adds them from 3.3 on). Checked
   * before an embedded Spark starts: without them Spark fails deep inside its start-up.
   */
  static final List<String> JAVA17_OPENS =
      List.of(
          "java.base/java.lang",
          "java.base/java.lang.invoke",
          "java.base/java.lang.reflect",
          "java.base/java.io",
          "java.base/java.net",
          "java.base/java.nio",
          "java.base/java.util",
          "java.base/java.util.concurrent",
          "java.base/java.util.concurrent.atomic",
          "java.base/sun.nio.ch",
          "java.base/sun.nio.cs",
          "java.base/sun.security.action",
          "java.base/sun.util.calendar");

  private final SparkPipelineOptions spark;

  /** The jars the user asked to ship ({@code --filesToStage}), before xinfer clears it. */
  private final @Nullable List<String> filesToStage;

  /** A streaming job's recovery from the checkpoint of a run before it, with --checkpointDir. */
  private @Nullable SparkRecovery recovery;

  /** The job's temporary folders (its packed jars, its own checkpoints), gone at release. */
  private final List<java.nio.file.Path> jobDirs =
      new java.util.concurrent.CopyOnWriteArrayList<>();

  public SparkEngine(PipelineOptions options) {
    this.spark = options.as(SparkPipelineOptions.class);
    List<String> requested = options.as(FileStagingOptions.class).getFilesToStage();
    this.filesToStage = requested == null ? null : List.copyOf(requested);
  }

  @Override
  public String runnerName() {
    return "SparkRunner";
  }

  @Override
  public String target() {
    return "sparkMaster=" + spark.getSparkMaster();
  }

  @Override
  public boolean embedded() {
    return spark.getSparkMaster().startsWith("local");
  }

  /**
   * In streaming, reads become primitive reads, which {@link SparkStreamingRunner} runs as Spark
   * input streams: Beam's portable Spark streaming runner has neither a native unbounded Read nor
   * checkpointing of splittable DoFns.
   */
  /** How long a streaming job's SDK worker outlives the last micro-batch that used it. */
  static final int STREAMING_WORKER_TTL_MS = 60_000;

  @Override
  public void adjust(Pipeline pipeline) {
    if (spark.isStreaming()) {
      SplittableParDo.convertReadBasedSplittableDoFnsToPrimitiveReads(pipeline);
      if (!Engine.isSet(spark, "environmentCacheMillis")) {
        // Beam's default (0) closes a stage's SDK worker when each task ends: every micro-batch
        // started a new Python worker and loaded the model again (~6 s; ~35 records/s). Kept
        // while batches come; a dead worker is replaced (LoopbackFnServers).
        spark.as(PortablePipelineOptions.class).setEnvironmentCacheMillis(STREAMING_WORKER_TTL_MS);
      }
    }
  }

  @Override
  public PortablePipelineRunner runner(JobInfo jobInfo) {
    checkJavaOpens();
    bindDriverToLoopback();
    if (spark.isStreaming() && Engine.isSet(spark, "checkpointDir")) {
      // A folder of the user's: a run after a crash goes on from the checkpoint there.
      recovery = new SparkRecovery(Paths.get(spark.getCheckpointDir()), embedded());
      if (!Engine.isSet(spark, "checkpointDurationMillis")) {
        // The Kafka readers' positions are the state of Beam's read stream, which Spark writes
        // every 10 s by default; a restore from an older position re-read records for batches
        // that had completed, past records of batches that had not (measured: 238 of 4,000
        // records lost). Written with every micro-batch, none were.
        spark.setCheckpointDurationMillis(spark.getBatchIntervalMillis());
      }
    } else if (spark.isStreaming()) {
      // Beam's default is /tmp/JOBNAME, readable by every user; this run's own folder instead.
      java.nio.file.Path checkpoints = PrivateTempDirs.create("xinfer-spark-checkpoint-");
      jobDirs.add(checkpoints);
      spark.setCheckpointDir(checkpoints.toString());
    }
    if (!embedded()) {
      prepareForCluster();
    }
    return spark.isStreaming()
        ? new SparkStreamingRunner(spark, recovery)
        : new SparkPipelineRunner(spark);
  }

  /**
   * Keeps the embedded Spark's servers on 127.0.0.1: its driver RPC and block manager (Spark binds
   * the host's address by default) and its web UI (all interfaces; Spark 3.2 binds it to
   * $SPARK_LOCAL_IP only, which a running JVM cannot set, so it is off unless the user turns it on
   * with -Dspark.ui.enabled=true). Beam's SparkContextFactory builds its SparkConf from {@code
   * spark.*} system properties; ones the user set are kept.
   */
  static void bindDriverToLoopback() {
    setIfAbsent("spark.driver.bindAddress", "127.0.0.1");
    setIfAbsent("spark.driver.host", "127.0.0.1");
    setIfAbsent("spark.ui.enabled", "false");
  }

  /**
   * What a standalone cluster needs of the driver: its secret, when the cluster authenticates
   * applications ({@code --xinferSparkSecretFile}); and for the executors to run the job's Java
   * stages: the job's jars ({@link ClusterJars#forJob}: only its own when the nodes hold the job
   * runtime, {@code --xinferSparkRuntimeJars}), the Java 17 flags, and Beam's Guava ahead of the
   * Guava that Spark's own jars bring (Beam's dependencies call methods that old Guava lacks).
   */
  private void prepareForCluster() {
    String secretFile = spark.as(XinferOptions.class).getXinferSparkSecretFile();
    if (secretFile != null) {
      // In this JVM only (a -D flag would show on its command line); the worker hands the
      // executors its own copy.
      setIfAbsent("spark.authenticate", "true");
      setIfAbsent(
          "spark.authenticate.secret", ServiceSecret.read(secretFile, "--xinferSparkSecretFile"));
    }
    XinferOptions xinfer = spark.as(XinferOptions.class);
    List<String> runtime =
        xinfer.getXinferSparkRuntimeJars() == null
            ? List.of()
            : ClusterJars.runtimeListedIn(
                Paths.get(xinfer.getXinferSparkRuntimeJars()), "--xinferSparkRuntimeJars");
    java.nio.file.Path packed = PrivateTempDirs.create("xinfer-job-jars-");
    jobDirs.add(packed);
    List<String> jars = ClusterJars.forJob(filesToStage, runtime, spark, packed);
    spark.setFilesToStage(jars);
    StringBuilder opens = new StringBuilder();
    for (String module : JAVA17_OPENS) {
      opens
          .append(opens.length() == 0 ? "" : " ")
          .append("--add-opens=")
          .append(module)
          .append("=ALL-UNNAMED");
    }
    setIfAbsent("spark.executor.extraJavaOptions", opens.toString());
    List<String> guava = new ArrayList<>();
    for (String jar : runtime.isEmpty() ? jars : runtime) {
      String name = new java.io.File(jar).getName();
      if (name.matches("guava-3\\d.*\\.jar") || name.matches("failureaccess-.*\\.jar")) {
        guava.add(jar);
      }
    }
    setIfAbsent("spark.executor.extraClassPath", String.join(java.io.File.pathSeparator, guava));
  }

  private static void setIfAbsent(String key, String value) {
    if (System.getProperty(key) == null) {
      System.setProperty(key, value);
    }
  }

  @Override
  public void prepare(JobInfo jobInfo) {
    if (embedded()) {
      LoopbackFnServers.Runner.SPARK.register(jobInfo.jobId());
    }
  }

  @Override
  public PortablePipelineResult run(
      PortablePipelineRunner runner, RunnerApi.Pipeline pipeline, JobInfo jobInfo)
      throws Exception {
    return runner.run(pipeline, jobInfo);
  }

  /**
   * Stops the active streaming context, or cancels the active batch job's Spark jobs, which ends it
   * with a failure (Beam's portable Spark runner holds both until they end, so Spark's registries
   * are the way to them).
   */
  @Override
  public boolean cancel() {
    scala.Option<StreamingContext> active = StreamingContext.getActive();
    if (!active.isEmpty()) {
      active.get().stop(true, false);
      return true;
    }
    scala.Option<org.apache.spark.SparkContext> batch =
        org.apache.spark.SparkContext$.MODULE$.getActive();
    if (batch.isEmpty()) {
      return false;
    }
    batch.get().cancelAllJobs();
    return true;
  }

  @Override
  public @Nullable MetricResults liveMetrics() {
    try {
      // The driver's accumulator, which the executors' stage functions add to.
      return MetricsContainerStepMap.asAttemptedOnlyMetricResults(
          MetricsAccumulator.getInstance().value());
    } catch (IllegalStateException e) {
      return null; // not started yet
    }
  }

  @Override
  public void release(JobInfo jobInfo) {
    if (embedded()) {
      LoopbackFnServers.Runner.SPARK.unregister(jobInfo.jobId());
    }
    if (recovery != null) {
      recovery.release();
    }
    jobDirs.forEach(PrivateTempDirs::delete);
    jobDirs.clear();
  }

  /** Fails with the flags to add when this JVM lacks what Spark needs on Java 17. */
  static void checkJavaOpens() {
    Module unnamed = SparkEngine.class.getModule();
    StringBuilder missing = new StringBuilder();
    for (String opens : JAVA17_OPENS) {
      String pkg = opens.substring(opens.indexOf('/') + 1);
      if (!Object.class.getModule().isOpen(pkg, unnamed)) {
        missing.append(" --add-opens=").append(opens).append("=ALL-UNNAMED");
      }
    }
    if (missing.length() > 0) {
      throw new IllegalStateException(
          "Spark 3.2 on Java "
              + Runtime.version().feature()
              + " needs JVM flags this JVM was started without. Add them to the java command (or "
              + "to MAVEN_OPTS/surefire argLine for tests; ./xinfer adds them):"
              + missing);
    }
  }
}
