package dev.xinfer.runtime.flink;

import dev.xinfer.runtime.ClusterJars;
import dev.xinfer.runtime.LoopbackFnServers;
import dev.xinfer.runtime.PrivateTempDirs;
import dev.xinfer.runtime.portable.Engine;
import dev.xinfer.runtime.python.PythonServices;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
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
import org.apache.beam.sdk.options.FileStagingOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.construction.SplittableParDo;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.GlobalConfiguration;
import org.apache.flink.core.execution.JobClient;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Flink through Beam's {@link FlinkPipelineRunner}: {@code --flinkMaster=[local]} (the default)
 * runs an embedded Flink, {@code host:port} submits to a running JobManager. A streaming job's
 * bundles last at most {@value #STREAMING_BUNDLE_MILLIS} ms unless {@code --maxBundleTimeMills}
 * says otherwise, and data moves between Flink and the SDK harnesses within a bundle, at most
 * {@value #STREAMING_DATA_FLUSH_MILLIS} ms after it is written, unless {@code
 * --experiments=data_buffer_time_limit_ms=N} says otherwise.
 */
@Internal
public final class FlinkEngine implements Engine {
  private static final Logger LOG = LoggerFactory.getLogger(FlinkEngine.class);
  private static final String LOCAL = "[local]";

  /**
   * {@code --maxBundleTimeMills} of a streaming job unless the user sets it. Records do not wait
   * for their bundle's end (see {@link #STREAMING_DATA_FLUSH_MILLIS}), nor, with xinfer's copy of
   * Beam's {@code ExecutableStageDoFnOperator}, for a record behind them; only rows that came
   * within {@code RowBlocks.STREAMING_BLOCK_WAIT_MILLIS} of each other, the last of a burst, wait
   * for the next row or their bundle's end in the first stage. Each bundle's end costs every stage
   * a round trip to its SDK harness on the operator's thread, under the lock the source needs: 100
   * ms bundles end 10 times a second; 10 ms bundles, xinfer's default until 2026-12-07, ended 100
   * times and held a 20,000 records/s job below its rate. Tried again once Beam's thread per bundle
   * was gone ({@code BundleInputs}), by hand on 2026-12-08, 10 and 100 ms alternating: at 20,000
   * records/s 10 ms sustained the rate in 1 run of 4, 100 ms in 2 of 3; at 1,000/s the p99 was 32
   * against 65 ms in one hour and 155 against 102 in the next. So 100 ms stays.
   */
  static final long STREAMING_BUNDLE_MILLIS = 100;

  /**
   * How long, in ms, Flink's side and the Java SDK harness hold a streaming bundle's data before
   * sending it on (Beam's {@code data_buffer_time_limit_ms} experiment; Beam sends data at 1 MB or
   * at the bundle's end otherwise). xinfer's Python SDK workers send their outputs when they run
   * out of input (see {@code xinfer.beam_compat.install_flush_when_idle}), and xinfer's copy of
   * Beam's {@code SdkHarnessClient} takes a streaming bundle's outputs as they come.
   */
  static final int STREAMING_DATA_FLUSH_MILLIS = 1;

  /** Beam's experiment for {@link #STREAMING_DATA_FLUSH_MILLIS}. */
  static final String DATA_FLUSH_EXPERIMENT = "data_buffer_time_limit_ms";

  private final PipelineOptions options;
  private final FlinkPipelineOptions flink;
  private final @Nullable String userConfDir;
  private final @Nullable List<String> filesToStage;
  private final CompletableFuture<JobClient> jobClient = new CompletableFuture<>();
  private volatile @Nullable URI restAddress;
  private @Nullable FlinkRestMetrics restMetrics;

  /** The job's temporary folders (its Flink configuration, its packed jars), gone at release. */
  private final List<Path> jobDirs = new java.util.concurrent.CopyOnWriteArrayList<>();

  /** Flink job id to the REST address of the Flink it runs on, for the jobs running now. */
  private static final Map<String, URI> RUNNING = new ConcurrentHashMap<>();

  /**
   * How often the embedded Flink's REST server refreshes its copy of the jobs' metrics, in ms
   * ({@code metrics.fetcher.update-interval}; Flink's default is 10 s): what its web UI and {@link
   * #liveMetrics} show is at most this old.
   */
  static final long EMBEDDED_METRICS_REFRESH_MILLIS = 1000;

  /** How long {@link #liveMetrics} waits for each answer of Flink's REST API. */
  static final long REST_TIMEOUT_MILLIS = 5000;

  /** How long {@link #release} waits for an ended job's embedded Flink to shut down. */
  static final long EMBEDDED_CLOSE_SECONDS = 30;

  /**
   * The key, in the client configuration ({@code --flinkConfDir}), of the file that lists xinfer's
   * job runtime on the cluster's nodes (jar paths: xinfer, Beam's Flink runner, KafkaIO): a cluster
   * job then ships only its own jars, and loads those from the nodes' disks ({@link
   * ClusterJars#forJob}). {@code ./xinfer cluster up flink} writes the list and sets the key.
   */
  public static final String RUNTIME_JARS_KEY = "xinfer.cluster.runtime-jars";

  public FlinkEngine(PipelineOptions options) {
    this.options = options;
    this.flink = options.as(FlinkPipelineOptions.class);
    this.userConfDir = flink.getFlinkConfDir();
    // Read before XinferRunner clears it for Beam's own staging.
    List<String> requested = options.as(FileStagingOptions.class).getFilesToStage();
    this.filesToStage = requested == null ? null : List.copyOf(requested);
    String master = flink.getFlinkMaster();
    if (master == null || FlinkPipelineOptions.AUTO.equals(master)) {
      flink.setFlinkMaster(LOCAL);
    }
    if (flink.isStreaming() && !Engine.isSet(options, "maxBundleTimeMills")) {
      flink.setMaxBundleTimeMills(STREAMING_BUNDLE_MILLIS);
    }
    if (flink.isStreaming()
        && ExperimentalOptions.getExperimentValue(options, DATA_FLUSH_EXPERIMENT) == null) {
      ExperimentalOptions.addExperiment(
          options.as(ExperimentalOptions.class),
          DATA_FLUSH_EXPERIMENT + "=" + STREAMING_DATA_FLUSH_MILLIS);
    }
    // Without it Flink copies every element between chained operators through its coder (encode,
    // decode): 13% of the CPU of the Kafka digits pipeline at 20,000 records/s (JFR). Beam's model
    // forbids mutating an element, and Beam's serializers never fill a reused instance, so sharing
    // the element is safe; --objectReuse=false turns it off.
    if (!Engine.isSet(options, "objectReuse")) {
      flink.setObjectReuse(true);
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
    String restoreFrom = null;
    String savepoint = flink.getSavepointPath();
    if (embedded() && savepoint != null) {
      // Beam applies --savepointPath to cluster jobs only; the embedded one takes it from the
      // Flink configuration.
      restoreFrom = restorePath(Path.of(savepoint)).toUri().toString();
      LOG.info("xinfer: the embedded Flink job restores from {}", restoreFrom);
    } else if (savepoint != null
        && !savepoint.contains("://")
        && Files.exists(Path.of(savepoint))) {
      // A job's checkpoint folder on this machine (a loopback cluster's): its newest checkpoint.
      flink.setSavepointPath(restorePath(Path.of(savepoint)).toString());
      LOG.info("xinfer: the Flink job restores from {}", flink.getSavepointPath());
    }
    String confDir =
        xinferConfDir(
            userConfDir,
            embedded(),
            flink.isStreaming(),
            checkpointDir(),
            restoreFrom,
            Boolean.TRUE.equals(flink.getAllowNonRestoredState()));
    // Beam's FlinkPipelineRunner prefers --flinkConfDir to the directory it is given; xinfer's
    // holds the user's configuration too.
    flink.setFlinkConfDir(confDir);
    jobDirs.add(Path.of(confDir));
    // A cluster's TaskManagers run the Java stages with the jars the job ships and their own.
    if (!embedded()) {
      checkJobManager(flink.getFlinkMaster());
    }
    List<String> jars = List.of();
    if (!embedded()) {
      Path packed = PrivateTempDirs.create("xinfer-job-jars-");
      jobDirs.add(packed);
      jars = ClusterJars.forJob(filesToStage, runtimeJars(userConfDir), options, packed);
    }
    return new FlinkPipelineRunner(flink, confDir, jars);
  }

  /**
   * The cluster's job-runtime jars, from the file that {@value #RUNTIME_JARS_KEY} names in the
   * client configuration; none when it names none.
   */
  static List<String> runtimeJars(@Nullable String confDir) {
    if (confDir == null) {
      return List.of();
    }
    String list =
        GlobalConfiguration.loadConfiguration(confDir)
            .get(ConfigOptions.key(RUNTIME_JARS_KEY).stringType().noDefaultValue());
    if (list == null || list.isBlank()) {
      return List.of();
    }
    return ClusterJars.runtimeListedIn(
        Path.of(list.trim()), RUNTIME_JARS_KEY + " in " + confDir + "/config.yaml");
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
      keepTaskThreadGroups();
      LoopbackFnServers.Runner.FLINK.register(jobInfo.jobId());
    }
  }

  /**
   * Makes the embedded Flink's static thread groups for task threads and their timers ({@code
   * Task.TASK_THREADS_GROUP}, {@code StreamTask.TRIGGER_THREAD_GROUP}) non-daemon. Each is created
   * under the group of the thread that first loads its class; under a daemon group (JUnit's {@code
   * Timeout} rule runs tests in one) it is a daemon group too, which Java 17 destroys when its last
   * thread ends, as every task's does when a job restarts. The restarted tasks then fail with
   * {@code IllegalThreadStateException}, and so does every later Flink job in the JVM.
   */
  @SuppressWarnings("removal") // ThreadGroup's daemon flag: gone in Java 19+, where groups live on
  static void keepTaskThreadGroups() {
    try {
      java.lang.reflect.Field tasks =
          org.apache.flink.runtime.taskmanager.Task.class.getDeclaredField("TASK_THREADS_GROUP");
      tasks.setAccessible(true);
      for (ThreadGroup group :
          List.of(
              (ThreadGroup) tasks.get(null),
              org.apache.flink.streaming.runtime.tasks.StreamTask.TRIGGER_THREAD_GROUP)) {
        if (group.isDaemon()) {
          group.setDaemon(false);
        }
      }
    } catch (ReflectiveOperationException | RuntimeException e) {
      throw new IllegalStateException(
          "xinfer cannot reach Flink's task thread groups (Task.TASK_THREADS_GROUP); this xinfer "
              + "version is built for Flink 1.19",
          e);
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
                announceRestAddress(client, jobInfo.jobName());
                watchRestarts(client, jobInfo.jobName());
                Path checkpoints = checkpointDir();
                if (checkpoints != null) {
                  LOG.info(
                      "xinfer: job {} checkpoints to {}; after a crash of this JVM, run it again"
                          + " with --savepointPath={} (the newest checkpoint in it is used)",
                      jobInfo.jobName(),
                      checkpoints.resolve(client.getJobID().toString()),
                      checkpoints.resolve(client.getJobID().toString()));
                }
              }
            });
    try {
      return runner.run(pipeline, jobInfo);
    } finally {
      FlinkJobClients.forgetThisThread();
    }
  }

  /**
   * Logs each restart of the job as it happens (Flink itself logs it below the warnings xinfer's
   * defaults show): the line names the job, how many restarts so far, and what Flink does.
   */
  private static final java.util.concurrent.atomic.AtomicInteger RESTARTS =
      new java.util.concurrent.atomic.AtomicInteger();

  /** Restarts of embedded or cluster Flink jobs run from this JVM so far (for fault reports). */
  public static int restartsSoFar() {
    return RESTARTS.get();
  }

  private static void watchRestarts(JobClient client, String jobName) {
    Thread watcher =
        new Thread(
            () -> {
              JobStatus last = null;
              int restarts = 0;
              while (true) {
                JobStatus status;
                try {
                  status = client.getJobStatus().get(10, TimeUnit.SECONDS);
                } catch (Exception e) {
                  return; // the job is gone
                }
                if (status.isGloballyTerminalState()) {
                  return;
                }
                if (status == JobStatus.RESTARTING && last != JobStatus.RESTARTING) {
                  restarts++;
                  RESTARTS.incrementAndGet();
                  LOG.warn(
                      "xinfer: Flink job {} failed and is restarting from its last completed "
                          + "checkpoint (restart {}; at most {} failures in {}, then it fails)",
                      jobName,
                      restarts,
                      MAX_FAILURES,
                      FAILURE_INTERVAL);
                } else if (status == JobStatus.RUNNING && last == JobStatus.RESTARTING) {
                  LOG.warn(
                      "xinfer: Flink job {} is running again after restart {}", jobName, restarts);
                }
                last = status;
                try {
                  Thread.sleep(250);
                } catch (InterruptedException e) {
                  return;
                }
              }
            },
            "xinfer-flink-restarts-" + jobName);
    watcher.setDaemon(true);
    watcher.start();
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
   * xinfer's metrics (RunInference's, namespace {@code xinfer}, and its Kafka write's) of the job
   * so far, from Flink's metric system through its REST API ({@link FlinkRestMetrics}), embedded or
   * on a cluster; null before the job runs, once it has ended, or when the REST API does not answer
   * within {@value #REST_TIMEOUT_MILLIS} ms. Other namespaces' metrics are in the job's result once
   * it has ended: Flink's REST API does not tell where a metric's namespace ends. Flink's {@code
   * JobClient.getAccumulators()} holds no Beam metrics while a portable job runs: Beam's runner
   * adds its accumulator when the job ends.
   */
  @Override
  public @Nullable MetricResults liveMetrics() {
    JobClient client = jobClient.getNow(null);
    URI rest = restAddress;
    if (client == null || rest == null) {
      return null;
    }
    try {
      return restMetrics(client, rest).read();
    } catch (Exception e) {
      LOG.debug("xinfer: no metrics from Flink's REST API at {}", rest, e);
      return null;
    }
  }

  private synchronized FlinkRestMetrics restMetrics(JobClient client, URI rest) {
    if (restMetrics == null) {
      String confDir = flink.getFlinkConfDir();
      restMetrics =
          FlinkRestMetrics.connect(
              confDir == null
                  ? new org.apache.flink.configuration.Configuration()
                  : GlobalConfiguration.loadConfiguration(confDir),
              rest,
              client.getJobID(),
              REST_TIMEOUT_MILLIS);
    }
    return restMetrics;
  }

  /**
   * The running Flink jobs started from this JVM: Flink job id to the address of the web UI and
   * REST API that shows their metrics (for tools and tests; the log names it too).
   */
  public static Map<String, URI> runningJobs() {
    return Map.copyOf(RUNNING);
  }

  /** Finds the job's REST address and logs it: where its metrics are while it runs. */
  private void announceRestAddress(JobClient client, String jobName) {
    URI rest = embedded() ? embeddedRestAddress(client) : clusterRestAddress(flink);
    if (rest == null) {
      return;
    }
    restAddress = rest;
    RUNNING.put(client.getJobID().toString(), rest);
    LOG.info(
        "xinfer: Flink job {} ({}): its metrics (RunInference's under {}.*) in Flink's web UI and"
            + " REST API at {}",
        jobName,
        client.getJobID(),
        dev.xinfer.InferenceMetrics.NAMESPACE,
        rest);
  }

  /**
   * The REST address of the embedded Flink that runs the job of {@code client}, or null when it
   * cannot be found: Flink picks a free port for it and tells it only to its {@code MiniCluster},
   * which the job client holds.
   */
  static @Nullable URI embeddedRestAddress(JobClient client) {
    try {
      return miniCluster(client).getRestAddress().get(REST_TIMEOUT_MILLIS, TimeUnit.MILLISECONDS);
    } catch (Exception e) {
      LOG.warn(
          "xinfer: the embedded Flink's REST address is not known ({}): its job reports no "
              + "metrics while it runs",
          e.toString());
      return null;
    }
  }

  /** The embedded Flink that runs the job of {@code client}: its job client holds it. */
  private static org.apache.flink.runtime.minicluster.MiniCluster miniCluster(JobClient client)
      throws ReflectiveOperationException {
    java.lang.reflect.Field field = client.getClass().getDeclaredField("miniCluster");
    field.setAccessible(true);
    return (org.apache.flink.runtime.minicluster.MiniCluster) field.get(client);
  }

  /**
   * Waits until the embedded Flink of an ended job has shut down, at most {@value
   * #EMBEDDED_CLOSE_SECONDS} s. Flink closes a job's MiniCluster asynchronously once the job's
   * result is known; a program that exits meanwhile (the launcher's {@code System.exit}) runs the
   * shutdown hooks of its still-live Pekko actor systems while Flink closes the class loader they
   * load from, and the JVM prints a {@code NoClassDefFoundError} from "flink-shutdown-hook-1".
   */
  static void awaitEmbeddedClusterClosed(JobClient client) {
    try {
      miniCluster(client).closeAsync().get(EMBEDDED_CLOSE_SECONDS, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (Exception e) {
      LOG.warn(
          "xinfer: the embedded Flink of job {} did not shut down within {} s ({}); the JVM may"
              + " print Flink's shutdown errors when it exits",
          client.getJobID(),
          EMBEDDED_CLOSE_SECONDS,
          e.toString());
    }
  }

  /** The REST address of {@code --flinkMaster} (host:port, 8081 by default). */
  static URI clusterRestAddress(FlinkPipelineOptions flink) {
    String master = flink.getFlinkMaster();
    boolean https = master.startsWith("https://");
    String hostPort = master.replaceFirst("^https?://", "");
    if (!hostPort.contains(":")) {
      hostPort = hostPort + ":8081";
    }
    return URI.create((https ? "https://" : "http://") + hostPort);
  }

  @Override
  public void release(JobInfo jobInfo) {
    synchronized (this) {
      if (restMetrics != null) {
        restMetrics.close();
        restMetrics = null;
      }
    }
    JobClient ended = jobClient.getNow(null);
    if (ended != null) {
      RUNNING.remove(ended.getJobID().toString());
    }
    if (embedded()) {
      LoopbackFnServers.Runner.FLINK.unregister(jobInfo.jobId());
    }
    Path checkpoints = checkpointDir();
    JobClient client = jobClient.getNow(null);
    if (checkpoints != null && client != null) {
      removeIfEmpty(checkpoints.resolve(client.getJobID().toString()));
    }
    if (embedded() && client != null) {
      awaitEmbeddedClusterClosed(client);
    }
    jobDirs.forEach(PrivateTempDirs::delete);
    jobDirs.clear();
  }

  /**
   * Removes an ended job's checkpoint folder when Flink left only empty folders in it (it discards
   * a job's checkpoints when the job ends, unless they are retained).
   */
  static void removeIfEmpty(Path jobDir) {
    try (java.util.stream.Stream<Path> files = Files.walk(jobDir)) {
      if (files.noneMatch(Files::isRegularFile)) {
        PrivateTempDirs.deleteRecursively(jobDir);
      }
    } catch (IOException | UncheckedIOException e) {
      // Not there, or not readable: left as it is.
    }
  }

  /**
   * Where an embedded streaming job with checkpoints keeps them when the user names no place (no
   * {@code --stateBackend}, no {@code state.checkpoints.dir} in {@code --flinkConfDir}): {@value
   * #CHECKPOINTS} under the working directory, a file system that outlives the job's JVM. A
   * cluster's own configuration names its directory ({@code ./xinfer cluster up flink} does).
   */
  private @Nullable Path checkpointDir() {
    if (!embedded() || !flink.isStreaming() || flink.getCheckpointingInterval() <= 0) {
      return null;
    }
    if (flink.getStateBackend() != null || flink.getStateBackendFactory() != null) {
      return null;
    }
    return Path.of(CHECKPOINTS).toAbsolutePath();
  }

  static final String CHECKPOINTS = ".xinfer/checkpoints";

  /**
   * What xinfer adds to the job's Flink configuration, each unless the user's configuration sets
   * it:
   *
   * <ul>
   *   <li>{@code jobmanager.execution.failover-strategy: full}. A TaskManager's tasks share one
   *       Python SDK worker, and Beam keeps a job's worker for as long as any of its tasks on that
   *       TaskManager runs; restarting only the failed task (Flink's default, {@code region}) hands
   *       the restarted task the dead worker again, and it fails for ever. A full restart closes
   *       every task, so the pool starts a new worker.
   *   <li>A bounded restart strategy: at most {@value #MAX_FAILURES} failures in {@value
   *       #FAILURE_INTERVAL}, {@value #RESTART_DELAY} apart, then the job fails. With checkpoints
   *       and no strategy, Flink restarts without limit, so one record that always fails would
   *       loop.
   *   <li>{@code state.checkpoints.dir} when {@code checkpointDir} is given.
   * </ul>
   */
  static String recoveryDefaults(
      String userConfig, boolean streaming, @Nullable Path checkpointDir) {
    StringBuilder out = new StringBuilder("# Added by xinfer: recovery (see FlinkEngine).\n");
    if (!userConfig.contains("failover-strategy")) {
      out.append("jobmanager.execution.failover-strategy: full\n");
    }
    if (streaming && !userConfig.contains("restart-strategy")) {
      out.append("restart-strategy.type: failure-rate\n")
          .append("restart-strategy.failure-rate.max-failures-per-interval: ")
          .append(MAX_FAILURES)
          .append('\n')
          .append("restart-strategy.failure-rate.failure-rate-interval: ")
          .append(FAILURE_INTERVAL)
          .append('\n')
          .append("restart-strategy.failure-rate.delay: ")
          .append(RESTART_DELAY)
          .append('\n');
    }
    if (checkpointDir != null && !userConfig.contains("checkpoints.dir")) {
      out.append("state.checkpoints.dir: ").append(checkpointDir.toUri()).append('\n');
    }
    return out.toString();
  }

  static final int MAX_FAILURES = 4;
  static final String FAILURE_INTERVAL = "5 min";
  static final String RESTART_DELAY = "1 s";

  /**
   * The Flink configuration the job is submitted with: the user's ({@code --flinkConfDir}), or for
   * the embedded mini-cluster one that binds its servers (blob server, RPC, REST) to 127.0.0.1
   * rather than all interfaces; either way with xinfer's job listener, which lets a running job be
   * cancelled.
   */
  static String xinferConfDir(
      @Nullable String userConfDir,
      boolean embedded,
      boolean streaming,
      @Nullable Path checkpointDir) {
    return xinferConfDir(userConfDir, embedded, streaming, checkpointDir, null, false);
  }

  /**
   * A checkpoint or savepoint to restore from, given as itself (a folder with {@code _metadata}, or
   * that file) or as a job's checkpoint folder ({@code .xinfer/checkpoints/<job id>}), whose newest
   * complete checkpoint ({@code chk-N} with the highest N that has {@code _metadata}) it names.
   *
   * @throws IllegalArgumentException when there is none, naming what was looked at
   */
  static Path restorePath(Path given) {
    Path path = given.toAbsolutePath();
    if (Files.isRegularFile(path) || Files.isRegularFile(path.resolve("_metadata"))) {
      return path;
    }
    if (Files.isDirectory(path)) {
      try (java.util.stream.Stream<Path> children = Files.list(path)) {
        java.util.Optional<Path> newest =
            children
                .filter(p -> p.getFileName().toString().matches("chk-\\d+"))
                .filter(p -> Files.isRegularFile(p.resolve("_metadata")))
                .max(
                    java.util.Comparator.comparingLong(
                        p -> Long.parseLong(p.getFileName().toString().substring(4))));
        if (newest.isPresent()) {
          return newest.get();
        }
      } catch (IOException e) {
        throw new UncheckedIOException("xinfer could not list " + path, e);
      }
    }
    throw new IllegalArgumentException(
        "--savepointPath="
            + given
            + ": no checkpoint or savepoint there (a folder with a _metadata file, or a job's"
            + " checkpoint folder holding chk-N folders with one). A crashed embedded job's"
            + " checkpoints are in "
            + CHECKPOINTS
            + "/<job id> of its working directory (its log names the folder).");
  }

  static String xinferConfDir(
      @Nullable String userConfDir,
      boolean embedded,
      boolean streaming,
      @Nullable Path checkpointDir,
      @Nullable String restoreFrom,
      boolean allowNonRestoredState) {
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
      if (embedded && !config.toString().contains("metrics.fetcher.update-interval")) {
        config
            .append("# Added by xinfer: the web UI's and live metrics' refresh, in ms.\n")
            .append("metrics.fetcher.update-interval: ")
            .append(EMBEDDED_METRICS_REFRESH_MILLIS)
            .append('\n');
      }
      config.append(recoveryDefaults(config.toString(), streaming, checkpointDir));
      if (restoreFrom != null) {
        config
            .append("# Added by xinfer: --savepointPath (the embedded Flink takes it from here).\n")
            .append("execution.savepoint.path: ")
            .append(restoreFrom)
            .append('\n')
            .append("execution.savepoint.ignore-unclaimed-state: ")
            .append(allowNonRestoredState)
            .append('\n');
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
