package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Clusters;
import dev.xinfer.testing.Stalls;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline on a real Spark standalone cluster (master and worker in their own JVMs, the
 * Java stages in the worker's executor) with a Python worker pool beside the worker, as {@code
 * ./xinfer cluster up spark} starts them; the same checks as on the embedded engines. The build
 * passes the cluster's addresses ({@code -Dxinfer.spark.master}, {@code -Dxinfer.spark.pool}) and
 * folder ({@code -Dxinfer.clusters}: pid files, the pool's secret). The streaming run checks the
 * sockets of every cluster process as it goes.
 */
@RunWith(JUnit4.class)
public class SparkClusterIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static String master() {
    return System.getProperty("xinfer.spark.master", "spark://127.0.0.1:7077");
  }

  private static String pool() {
    return System.getProperty("xinfer.spark.pool", "127.0.0.1:50001");
  }

  /**
   * A job on the cluster: its master, pool and secrets, and the job runtime on the nodes (the job
   * ships its own classes only).
   */
  private static String[] clusterFlags() {
    return new String[] {
      "--sparkMaster=" + master(),
      "--xinferWorkerPool=" + pool(),
      "--xinferWorkerPoolSecretFile=" + Clusters.poolSecret("spark"),
      "--xinferSparkSecretFile=" + Clusters.dir("spark").resolve("auth/secret"),
      "--xinferSparkRuntimeJars=" + Clusters.dir("spark").resolve("runtime-jars.txt"),
      Launcher.filesToStageFlag()
    };
  }

  @Test
  public void batchOnTheClusterPredictsEveryRecordAsPlainPython() throws Exception {
    Launcher.Summary summary =
        DemoRuns.batch(
            tmp.getRoot().toPath().resolve("predictions"), "SparkRunner", clusterFlags());
    assertThat(summary.toString(), containsString("records=1797 failed=0"));
  }

  @Test
  public void aJobOnTwoWorkersRunsItsPythonStagesOnEachNodesOwnPool() throws Exception {
    Clusters.requireNodes("spark", 2);
    long[] before = {
      Clusters.sdkWorkersStarted("spark", 1), Clusters.sdkWorkersStarted("spark", 2)
    };
    // A job on both nodes: its shuffle makes 4 partitions, and tasks go to any free core (the cores
    // of one machine are all "local" to its data). The job names node 1's pool; node 2's executor
    // runs its Python stages on node 2's pool (XINFER_NODE_WORKER_POOL in the worker's
    // environment, which executors inherit).
    Map<String, String> conf = Map.of("spark.default.parallelism", "4", "spark.locality.wait", "0");
    Map<String, String> prior = new HashMap<>();
    conf.forEach((key, value) -> prior.put(key, System.setProperty(key, value)));
    try {
      Launcher.Summary summary =
          DemoRuns.batch(
              tmp.getRoot().toPath().resolve("predictions"), "SparkRunner", clusterFlags());
      assertThat(summary.toString(), containsString("records=1797 failed=0"));
    } finally {
      prior.forEach(
          (key, value) -> {
            if (value == null) {
              System.clearProperty(key);
            } else {
              System.setProperty(key, value);
            }
          });
    }
    // Spark starts a stage's SDK worker only for a task with input: a pool that started one ran
    // part of the job's inference.
    for (int node = 1; node <= 2; node++) {
      long started = Clusters.sdkWorkersStarted("spark", node) - before[node - 1];
      assertTrue(
          "node " + node + "'s pool started " + started + " SDK workers for the job", started >= 1);
    }
  }

  @Test
  public void streamingOnTheClusterDeliversExactlyOnePredictionPerRecord() throws Exception {
    ClusterSockets.check(
        "spark",
        () ->
            DemoRuns.streaming(
                tmp.getRoot().toPath().resolve("streaming"), "SparkRunner", 600, clusterFlags()));
  }

  @Test
  public void anApplicationWithoutTheClustersSecretRunsNothing() throws Exception {
    // The probe works: with the secret, its task runs on the worker and writes its output.
    Path ran = tmp.getRoot().toPath().resolve("with-secret");
    assertEquals(0, probe(ran, Clusters.dir("spark").resolve("auth/secret").toString()));
    assertTrue(Files.exists(ran.resolve("_SUCCESS")));
    // Without it, as any other local process: refused, nothing runs.
    Path refused = tmp.getRoot().toPath().resolve("without-secret");
    assertNotEquals(0, probe(refused));
    assertFalse(Files.exists(refused.resolve("_SUCCESS")));
  }

  /** Runs {@link SparkProbe} in a JVM of its own, bounded to 2 minutes; its exit code. */
  private static int probe(Path output, String... secretFile) throws Exception {
    List<String> command =
        new ArrayList<>(
            List.of(
                Paths.get(System.getProperty("java.home"), "bin", "java").toString(),
                "@runners-config/java17.args",
                "-cp",
                System.getProperty("java.class.path"),
                SparkProbe.class.getName(),
                master(),
                output.toString()));
    command.addAll(List.of(secretFile));
    Process process =
        new ProcessBuilder(command)
            .redirectErrorStream(true)
            .redirectOutput(output.resolveSibling(output.getFileName() + ".log").toFile())
            .start();
    if (!process.waitFor(120, TimeUnit.SECONDS)) {
      process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
      return -1;
    }
    return process.exitValue();
  }
}
