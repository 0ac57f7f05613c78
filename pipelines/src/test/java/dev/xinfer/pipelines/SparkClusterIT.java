package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;

import dev.xinfer.testing.Clusters;
import dev.xinfer.testing.Stalls;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.Timeout;
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
  @Rule public final Timeout stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static String master() {
    return System.getProperty("xinfer.spark.master", "spark://127.0.0.1:7077");
  }

  private static String pool() {
    return System.getProperty("xinfer.spark.pool", "127.0.0.1:50001");
  }

  @Test
  public void batchOnTheClusterPredictsEveryRecordAsPlainPython() throws Exception {
    Launcher.Summary summary =
        DemoRuns.batch(
            tmp.getRoot().toPath().resolve("predictions"),
            "SparkRunner",
            "--sparkMaster=" + master(),
            "--xinferWorkerPool=" + pool(),
            "--xinferWorkerPoolSecretFile=" + Clusters.poolSecret("spark"));
    assertThat(summary.toString(), containsString("records=1797 failed=0"));
  }

  @Test
  public void streamingOnTheClusterDeliversExactlyOnePredictionPerRecord() throws Exception {
    ClusterSockets.check(
        "spark",
        () ->
            DemoRuns.streaming(
                tmp.getRoot().toPath().resolve("streaming"),
                "SparkRunner",
                600,
                "--sparkMaster=" + master(),
                "--xinferWorkerPool=" + pool(),
                "--xinferWorkerPoolSecretFile=" + Clusters.poolSecret("spark")));
  }
}
