package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertThrows;

import dev.xinfer.testing.Digits;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline on a real Spark standalone cluster (master and worker in their own JVMs, the
 * Java stages in the worker's executor) with a Python worker pool beside the worker, as {@code
 * ./xinfer cluster up spark} starts them; the same checks as on the embedded engines. The build
 * passes the cluster's addresses ({@code -Dxinfer.spark.master}, {@code -Dxinfer.spark.pool}).
 */
@RunWith(JUnit4.class)
public class SparkClusterIT {
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
            "--xinferWorkerPool=" + pool());
    assertThat(summary.toString(), containsString("records=1797 failed=0"));
  }

  @Test
  public void streamingOnTheClusterIsRefusedAtSubmitWithTheReason() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                Launcher.run(
                    DemoRuns.args(
                        Digits.dataset(),
                        tmp.getRoot().toPath().resolve("streaming"),
                        "--runner=SparkRunner",
                        "--sparkMaster=" + master(),
                        "--xinferWorkerPool=" + pool(),
                        "--streaming",
                        "--bootstrapServers=" + DemoRuns.kafka(),
                        "--records=10"),
                    DigitsPipeline.Options.class,
                    DigitsPipeline::build));
    assertThat(e.getMessage(), containsString("SparkRunner cannot run this streaming pipeline"));
  }
}
