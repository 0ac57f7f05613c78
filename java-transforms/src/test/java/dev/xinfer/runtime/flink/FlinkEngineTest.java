package dev.xinfer.runtime.flink;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.sdk.options.ExperimentalOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class FlinkEngineTest {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static FlinkPipelineOptions flinkOptions(String... args) {
    PipelineOptions options = PipelineOptionsFactory.fromArgs(args).create();
    new FlinkEngine(options);
    return options.as(FlinkPipelineOptions.class);
  }

  @Test
  public void streamingBundlesAreShortUnlessTheUserSaysOtherwise() {
    assertEquals(
        FlinkEngine.STREAMING_BUNDLE_MILLIS,
        (long) flinkOptions("--streaming").getMaxBundleTimeMills());
    assertEquals(
        1000L,
        (long) flinkOptions("--streaming", "--maxBundleTimeMills=1000").getMaxBundleTimeMills());
    // Batch keeps Beam's default.
    assertEquals(10_000L, (long) flinkOptions().getMaxBundleTimeMills());
  }

  @Test
  public void streamingDataMovesWithinABundleUnlessTheUserSaysOtherwise() {
    assertEquals(
        String.valueOf(FlinkEngine.STREAMING_DATA_FLUSH_MILLIS),
        ExperimentalOptions.getExperimentValue(
            flinkOptions("--streaming"), FlinkEngine.DATA_FLUSH_EXPERIMENT));
    assertEquals(
        "20",
        ExperimentalOptions.getExperimentValue(
            flinkOptions("--streaming", "--experiments=data_buffer_time_limit_ms=20"),
            FlinkEngine.DATA_FLUSH_EXPERIMENT));
    // Batch sends data at 1 MB or at a bundle's end, as Beam does.
    assertEquals(
        null,
        ExperimentalOptions.getExperimentValue(flinkOptions(), FlinkEngine.DATA_FLUSH_EXPERIMENT));
  }

  @Test
  public void theClientConfigurationNamesTheClustersJobRuntime() throws Exception {
    Path conf = tmp.newFolder("client-conf").toPath();
    Path list = conf.resolve("runtime-jars.txt");
    Files.writeString(list, "/node/lib/xinfer.jar\n/node/lib/beam.jar\n");
    // As ./xinfer cluster up flink writes it: nested YAML beside the TLS settings.
    Files.writeString(
        conf.resolve("config.yaml"), "xinfer:\n  cluster:\n    runtime-jars: " + list + "\n");
    assertEquals(
        java.util.List.of("/node/lib/xinfer.jar", "/node/lib/beam.jar"),
        FlinkEngine.runtimeJars(conf.toString()));
    // No key, or no configuration: every jar ships with the job.
    Path plain = tmp.newFolder("plain").toPath();
    Files.writeString(plain.resolve("config.yaml"), "parallelism.default: 2\n");
    assertEquals(java.util.List.of(), FlinkEngine.runtimeJars(plain.toString()));
    assertEquals(java.util.List.of(), FlinkEngine.runtimeJars(null));
  }

  @Test
  public void theUsersFlinkConfigurationIsUsedWithXinfersAdditions() throws Exception {
    Path userConf = tmp.newFolder("conf").toPath();
    Files.writeString(userConf.resolve("config.yaml"), "taskmanager.numberOfTaskSlots: 3\n");
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs("--flinkConfDir=" + userConf, "--streaming").create();
    FlinkEngine engine = new FlinkEngine(options);
    engine.runner(JobInfo.create("job", "job", "", PipelineOptionsTranslation.toProto(options)));

    // Beam's runner prefers --flinkConfDir to the directory xinfer hands it: the option must name
    // xinfer's copy, or the job listener (which lets a job be cancelled) is lost.
    String confDir = options.as(FlinkPipelineOptions.class).getFlinkConfDir();
    assertNotEquals(userConf.toString(), confDir);
    String config = Files.readString(Path.of(confDir, "config.yaml"), StandardCharsets.UTF_8);
    assertTrue(config, config.contains("taskmanager.numberOfTaskSlots: 3"));
    assertTrue(
        config, config.contains("execution.job-listeners: " + FlinkJobClients.class.getName()));
  }

  @Test
  @SuppressWarnings("removal")
  public void flinksTaskThreadGroupsOutliveTheirThreadsWhateverGroupLoadedThem() throws Exception {
    // JUnit's Timeout rule runs a test in a daemon thread group: Flink's static groups, created
    // under it, would be destroyed when a restarting job's last task thread ends.
    ThreadGroup daemon = new ThreadGroup("daemon-like-junit-timeout");
    daemon.setDaemon(true);
    Thread thread = new Thread(daemon, FlinkEngine::keepTaskThreadGroups);
    thread.start();
    thread.join();
    java.lang.reflect.Field tasks =
        org.apache.flink.runtime.taskmanager.Task.class.getDeclaredField("TASK_THREADS_GROUP");
    tasks.setAccessible(true);
    assertTrue(!((ThreadGroup) tasks.get(null)).isDaemon());
    assertTrue(
        !org.apache.flink.streaming.runtime.tasks.StreamTask.TRIGGER_THREAD_GROUP.isDaemon());
  }

  @Test
  public void recoveryDefaultsGiveWayToTheUsersSettings() {
    String defaults = FlinkEngine.recoveryDefaults("", true, Path.of("/ck"));
    assertTrue(defaults, defaults.contains("jobmanager.execution.failover-strategy: full"));
    assertTrue(defaults, defaults.contains("restart-strategy.type: failure-rate"));
    assertTrue(defaults, defaults.contains("state.checkpoints.dir: file:///ck"));
    String mine =
        FlinkEngine.recoveryDefaults(
            "restart-strategy.type: none\nstate.checkpoints.dir: file:///mine\n"
                + "jobmanager.execution.failover-strategy: region\n",
            true,
            Path.of("/ck"));
    assertTrue(mine, !mine.contains("failover-strategy"));
    assertTrue(mine, !mine.contains("restart-strategy"));
    assertTrue(mine, !mine.contains("checkpoints.dir"));
    // A batch job fails at once: no restarts.
    String batch = FlinkEngine.recoveryDefaults("", false, null);
    assertTrue(batch, !batch.contains("restart-strategy"));
  }

  @Test
  public void aJobsCheckpointFolderRestoresFromItsNewestCompleteCheckpoint() throws Exception {
    Path job = tmp.newFolder("job").toPath();
    for (String chk : new String[] {"chk-9", "chk-10", "chk-11"}) {
      Files.createDirectories(job.resolve(chk));
    }
    Files.writeString(job.resolve("chk-9/_metadata"), "m");
    Files.writeString(job.resolve("chk-10/_metadata"), "m");
    // chk-11 has no _metadata: still being written when the JVM died.
    Files.createDirectories(job.resolve("shared"));
    assertEquals(job.resolve("chk-10"), FlinkEngine.restorePath(job));
    assertEquals(job.resolve("chk-9"), FlinkEngine.restorePath(job.resolve("chk-9")));
    IllegalArgumentException none =
        org.junit.Assert.assertThrows(
            IllegalArgumentException.class, () -> FlinkEngine.restorePath(job.resolve("chk-11")));
    assertTrue(none.getMessage(), none.getMessage().contains("--savepointPath="));
    assertTrue(none.getMessage(), none.getMessage().contains("no checkpoint or savepoint there"));
  }

  @Test
  public void theEmbeddedFlinkTakesTheRestorePathFromItsConfiguration() throws Exception {
    String dir = FlinkEngine.xinferConfDir(null, true, true, null, "file:/ck/chk-3", true);
    String config = Files.readString(Path.of(dir, "config.yaml"), StandardCharsets.UTF_8);
    assertTrue(config, config.contains("execution.savepoint.path: file:/ck/chk-3\n"));
    assertTrue(config, config.contains("execution.savepoint.ignore-unclaimed-state: true\n"));
    String none = FlinkEngine.xinferConfDir(null, true, true, null);
    assertTrue(
        !Files.readString(Path.of(none, "config.yaml"), StandardCharsets.UTF_8)
            .contains("savepoint"));
  }

  @Test
  public void theEmbeddedFlinkRefreshesItsRestMetricsEverySecondUnlessTheUserSaysOtherwise()
      throws Exception {
    String dir = FlinkEngine.xinferConfDir(null, true, true, null);
    assertTrue(
        Files.readString(Path.of(dir, "config.yaml"), StandardCharsets.UTF_8)
            .contains("metrics.fetcher.update-interval: 1000\n"));
    Path userConf = tmp.newFolder("fetcher").toPath();
    Files.writeString(userConf.resolve("config.yaml"), "metrics.fetcher.update-interval: 5000\n");
    String user =
        Files.readString(
            Path.of(
                FlinkEngine.xinferConfDir(userConf.toString(), true, true, null), "config.yaml"),
            StandardCharsets.UTF_8);
    assertTrue(user, user.contains("metrics.fetcher.update-interval: 5000"));
    assertTrue(user, !user.contains("update-interval: 1000"));
    // A cluster's own configuration says how often its REST server refreshes.
    assertTrue(
        !Files.readString(
                Path.of(FlinkEngine.xinferConfDir(null, false, true, null), "config.yaml"),
                StandardCharsets.UTF_8)
            .contains("metrics.fetcher"));
  }

  @Test
  public void aClustersRestAddressIsItsFlinkMaster() {
    FlinkPipelineOptions flink = PipelineOptionsFactory.as(FlinkPipelineOptions.class);
    flink.setFlinkMaster("127.0.0.1:8081");
    assertEquals("http://127.0.0.1:8081", FlinkEngine.clusterRestAddress(flink).toString());
    flink.setFlinkMaster("https://flink.example:443");
    assertEquals("https://flink.example:443", FlinkEngine.clusterRestAddress(flink).toString());
    flink.setFlinkMaster("jobmanager");
    assertEquals("http://jobmanager:8081", FlinkEngine.clusterRestAddress(flink).toString());
  }
}
