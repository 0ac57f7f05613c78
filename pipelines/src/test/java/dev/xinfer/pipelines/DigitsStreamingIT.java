package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
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
 * PipelineResult.metrics()}, and on Flink also in Flink's own metric system (its REST API). Spark
 * writes at least once, and there each prediction also tells when the pipeline read its example.
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
      boolean atLeastOnce = !runner[0].equals("FlinkRunner");
      if (atLeastOnce) {
        flags.add("--exactlyOnce=false"); // what Spark does anyway; the launcher then reads times
      }
      Path output = tmp.getRoot().toPath().resolve(runner[0] + "-streaming").resolve("predictions");
      Launcher.Summary summary;
      java.util.Set<String> checkpoints;
      Map<String, Double> flinkMetrics;
      long flushersBefore = liveThreads(BEAMS_FLUSHER);
      try (CompletedCheckpoints watch = new CompletedCheckpoints();
          FlinkRestWatch rest = new FlinkRestWatch()) {
        summary = DemoRuns.streaming(output, runner[0], 600, flags.toArray(new String[0]));
        checkpoints = watch.seen();
        flinkMetrics = rest.seen();
      }
      // Beam 2.62's runner started a flusher thread for each bundle's inputs and left it behind
      // (hundreds in this run); xinfer's BundleInputs flushes them from threads shared by all.
      // What is left is the Java harness's own, one per stage it processes.
      long flushersLeft = liveThreads(BEAMS_FLUSHER) - flushersBefore;
      assertTrue(
          runner[0] + " left " + flushersLeft + " threads " + BEAMS_FLUSHER + " behind",
          flushersLeft <= 10);
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
      if (atLeastOnce) {
        assertReadTimes(runner[0], Path.of(output + "-latency.csv"), summary.records);
      }
    }
  }

  /**
   * On Flink a sparse stream's record goes on as its outputs come back from each stage's SDK
   * harness, not when its bundle ends or the stage's next input comes: with bundles and checkpoints
   * of 10 minutes (none ends within the run) every record of a stream of 20 a second comes back.
   * The launcher sends the first record alone and the rest once its prediction is back, so a record
   * with none behind it is on the way from the start. (Rows that come within {@code
   * RowBlocks.STREAMING_BLOCK_WAIT_MILLIS} of each other share a block, which waits for the next
   * row or the bundle's end.)
   */
  @Test
  public void onFlinkARecordDoesNotWaitForItsBundlesEnd() throws Exception {
    Path output = tmp.getRoot().toPath().resolve("long-bundles").resolve("predictions");
    Launcher.Summary summary =
        DemoRuns.streaming(
            output,
            "FlinkRunner",
            40,
            "--flinkMaster=[local]",
            "--parallelism=1",
            "--rate=20",
            "--maxBundleTimeMills=600000",
            "--maxBundleSize=1000000",
            "--checkpointingInterval=600000",
            "--exactlyOnce=false");
    assertEquals(0, summary.missing());
  }

  /** The name of the threads of Beam's time-based flush of the Fn API's data. */
  private static final String BEAMS_FLUSHER = "DataBufferOutboundFlusher-thread";

  private static long liveThreads(String name) {
    return Thread.getAllStackTraces().keySet().stream()
        .filter(t -> t.isAlive() && t.getName().equals(name))
        .count();
  }

  /**
   * Written at least once, each prediction carries the time the pipeline's source read its example
   * (DigitsPipeline publishes the input timestamp; KafkaIO's is the read's processing time), and
   * the launcher's latency file has it as read_ms: after the send (to Kafka's millisecond) and
   * before the prediction was back.
   */
  private static void assertReadTimes(String runner, Path latencyFile, long records)
      throws IOException {
    List<String> lines = Files.readAllLines(latencyFile);
    assertEquals("id,latency_ms,phase,sent_ms,read_ms", lines.get(0));
    assertEquals(records, lines.size() - 1);
    for (String line : lines.subList(1, lines.size())) {
      String[] fields = line.split(",", -1);
      double latency = Double.parseDouble(fields[1]);
      assertFalse(runner + ": no read time in " + line, fields[4].isEmpty());
      double read = Double.parseDouble(fields[4]);
      assertTrue(
          runner + ": read_ms outside [-1, latency_ms + 1] in " + line,
          read >= -1 && read <= latency + 1);
    }
  }
}
