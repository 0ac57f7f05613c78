package dev.xinfer.pipelines;

import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.util.ArrayList;
import java.util.List;
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
 * folder.
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
      try (CompletedCheckpoints watch = new CompletedCheckpoints()) {
        summary =
            DemoRuns.streaming(
                tmp.getRoot().toPath().resolve(runner[0] + "-streaming").resolve("predictions"),
                runner[0],
                600,
                flags.toArray(new String[0]));
        checkpoints = watch.seen();
      }
      if (runner[0].equals("FlinkRunner")) {
        assertFalse("the job completed checkpoints", checkpoints.isEmpty());
      }
      assertTrue(runner[0] + ": accuracy " + summary.accuracy(), summary.accuracy() >= 0.9);
      if (runner[0].equals("SparkRunner")) {
        // Spark tells a streaming job's metrics while it runs and when it is cancelled; Flink
        // does not (see FlinkEngine.liveMetrics).
        assertTrue(
            summary.toString(),
            summary.toString().contains("predictions=" + summary.records + " failures=0"));
      }
    }
  }
}
