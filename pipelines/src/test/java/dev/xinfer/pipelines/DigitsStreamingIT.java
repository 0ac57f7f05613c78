package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline in streaming mode on each embedded engine, through the Kafka broker of {@code
 * ./xinfer cluster up kafka}: exactly one prediction per record on the output topic, each equal to
 * the plain-Python reference. On Flink the output is written exactly once, which commits only when
 * a checkpoint completes; the test also sees the job's completed checkpoints in its checkpoint
 * folder. While each job runs, RunInference's metrics (with the model id) read through {@code
 * PipelineResult.metrics()}, and on Flink also in Flink's own metric system (its REST API).
 */
@RunWith(JUnit4.class)
public class DigitsStreamingIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  @Test
  public void streamingDeliversExactlyOnePredictionPerRecordOnEachRunner() throws Exception {
    for (String[] runner : TestRunners.EMBEDDED) {
      List<String> flags = new ArrayList<>(List.of(runner).subList(1, runner.length));
      flags.add("--checkpointingInterval=1000");
      Launcher.Summary summary;
      java.util.Set<String> checkpoints;
      Map<String, Double> flinkMetrics;
      try (CompletedCheckpoints watch = new CompletedCheckpoints();
          FlinkRestWatch rest = new FlinkRestWatch()) {
        summary =
            DemoRuns.streaming(
                tmp.getRoot().toPath().resolve(runner[0] + "-streaming").resolve("predictions"),
                runner[0],
                600,
                flags.toArray(new String[0]));
        checkpoints = watch.seen();
        flinkMetrics = rest.seen();
      }
      if (runner[0].equals("FlinkRunner")) {
        assertFalse("the job completed checkpoints", checkpoints.isEmpty());
        // RunInference's metrics in Flink's own metric system while the job ran (its REST API,
        // as the web UI and any reporter see them), the model id among them.
        assertTrue(
            "Flink's REST API showed no xinfer.num_inferences while the job ran: " + flinkMetrics,
            flinkMetrics.getOrDefault("num_inferences", 0.0) > 0);
        assertTrue(
            "no predictions by model " + Digits.MODEL_NAME + " in Flink's metrics: " + flinkMetrics,
            flinkMetrics.getOrDefault("predictions_by_model/" + Digits.MODEL_NAME, 0.0) > 0);
      }
      assertTrue(runner[0] + ": accuracy " + summary.accuracy(), summary.accuracy() >= 0.9);
      // PipelineResult.metrics() while the job ran, once every record was back (before the
      // launcher cancelled it), on each runner; and the summary's, after it was cancelled.
      String all = "predictions=" + summary.records + " failures=0";
      assertThat(runner[0] + " while running", summary.liveInference, containsString(all));
      assertThat(
          runner[0] + " while running",
          summary.liveInference,
          containsString("models={" + Digits.MODEL_NAME + "=" + summary.records + "}"));
      assertThat(runner[0] + " when cancelled", summary.toString(), containsString(all));
    }
  }
}
