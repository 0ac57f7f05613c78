package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * Real faults in the demo's streaming pipeline on the embedded Flink, through the Kafka broker of
 * {@code ./xinfer cluster up kafka}: the quick subset of the fault cases that runs in {@code
 * ./xinfer test}. Each reads the job's output topics back with a consumer of its own ({@code
 * read_committed}).
 */
@RunWith(JUnit4.class)
public class StreamingFaultsIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static String[] streamingFlags(String run, String... more) {
    List<String> flags =
        new ArrayList<>(
            List.of(
                "--runner=FlinkRunner",
                "--streaming",
                "--bootstrapServers=" + DemoRuns.kafka(),
                "--inputTopic=" + run + "-in",
                "--outputTopic=" + run + "-out",
                "--deadLetterTopic=" + run + "-dead",
                "--resultTimeoutSeconds=240"));
    flags.addAll(List.of(more));
    return flags.toArray(new String[0]);
  }

  /**
   * kill -9 of the Python SDK worker mid-stream, with exactly-once writes: Flink restarts the job
   * from its last checkpoint, the pool starts a new worker, and the committed output holds every
   * record's prediction once.
   */
  @Test
  public void aKilledSdkWorkerLosesAndRepeatsNothingWithExactlyOnce() throws Exception {
    int records = 1500; // ids of the data set (1797 examples)
    String run = "xinfer-fault-kill-" + System.nanoTime();
    Launcher.Summary summary;
    List<Long> seen;
    List<Long> killed;
    java.util.Set<String> checkpoints;
    try (SdkWorkers workers = new SdkWorkers(Duration.ofSeconds(8));
        CompletedCheckpoints watch = new CompletedCheckpoints()) {
      summary =
          Launcher.run(
              DemoRuns.args(
                  Digits.dataset(),
                  tmp.getRoot().toPath().resolve("predictions"),
                  streamingFlags(
                      run,
                      "--exactlyOnce",
                      "--checkpointingInterval=1000",
                      "--records=" + records,
                      "--rate=150")),
              DigitsPipeline.Options.class,
              DigitsPipeline::build);
      seen = workers.seen();
      killed = workers.killed();
      checkpoints = watch.seen();
    }
    assertFalse("the job completed checkpoints", checkpoints.isEmpty());
    assertEquals("one SDK worker killed: " + seen, 1, killed.size());
    assertTrue("the pool started a new worker after the kill: " + seen, seen.size() >= 2);
    // One prediction per record, each the reference's, none missing, none twice.
    DemoRuns.checkPredictions(
        "FlinkRunner", DemoRuns.readTopic(DemoRuns.kafka(), run + "-out", records), records);
    assertEquals(summary.toString(), 0, summary.missing());
    assertEquals(summary.toString(), 0, summary.duplicates);
    assertEquals(summary.toString(), 0, summary.deadLetters);
  }

  /**
   * Records that cannot be scored, mixed into the stream: each goes to the dead-letter topic with
   * its reason, every other record gets its prediction, and the job never restarts (one SDK worker
   * serves the whole run).
   */
  @Test
  public void poisonRecordsGoToTheDeadLetterTopicWithoutARestart() throws Exception {
    List<String> good =
        Files.readAllLines(Digits.dataset(), StandardCharsets.UTF_8).stream()
            .filter(l -> !l.startsWith("id,"))
            .limit(300)
            .collect(Collectors.toList());
    List<String> input = new ArrayList<>(good);
    input.add(100, "not a record");
    input.add(200, "900001,3,1.0,x,2.0");
    input.add(250, "900002,3,1.0,2.0"); // parses, but 2 pixels where the model takes 64
    Path csv = tmp.getRoot().toPath().resolve("poisoned.csv");
    Files.write(csv, input, StandardCharsets.UTF_8);
    String run = "xinfer-fault-poison-" + System.nanoTime();
    Launcher.Summary summary;
    List<Long> seen;
    try (SdkWorkers workers = new SdkWorkers(null)) {
      summary =
          Launcher.run(
              DemoRuns.args(
                  csv,
                  tmp.getRoot().toPath().resolve("predictions"),
                  streamingFlags(run, "--checkpointingInterval=2000", "--rate=200")),
              DigitsPipeline.Options.class,
              DigitsPipeline::build);
      seen = workers.seen();
    }
    assertEquals(summary.toString(), input.size(), summary.records);
    assertEquals(summary.toString(), 3, summary.deadLetters);
    assertEquals(summary.toString(), 0, summary.missing());
    assertEquals(summary.toString(), 0, summary.duplicates);
    assertEquals(summary.toString(), good.size(), summary.predictions);
    assertEquals("no restart: one SDK worker served the run " + seen, 1, seen.size());
    DemoRuns.checkPredictions(
        "FlinkRunner",
        DemoRuns.readTopic(DemoRuns.kafka(), run + "-out", good.size()),
        good.size());

    String deadLetters = String.join("\n", DemoRuns.readTopic(DemoRuns.kafka(), run + "-dead", 3));
    assertThat(deadLetters, containsString("\"record\":\"not a record\""));
    assertThat(
        deadLetters,
        containsString(
            "\"id\":900001,\"stage\":\"parsing\",\"error_type\":\"IllegalArgumentException\""));
    assertThat(deadLetters, containsString("'features' value 1 ('x', column 4) is not a number"));
    // The short record reaches the model and fails there, per record.
    assertThat(deadLetters, containsString("\"id\":900002,\"stage\":\""));
    assertTrue(deadLetters, !deadLetters.contains("\"id\":900002,\"stage\":\"parsing\""));
  }
}
