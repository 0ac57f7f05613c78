package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.TestRunners;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline, as {@code ./xinfer demo} runs it: the real file, the real Python services and
 * TensorFlow model, the embedded portable Flink runner; every output is checked.
 */
@RunWith(JUnit4.class)
public class DigitsPipelineIT {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private String[] args(Path input, Path output, String... more) {
    List<String> args =
        new ArrayList<>(
            List.of(
                "--input=" + input,
                "--output=" + output,
                "--modelUri=" + Digits.model(),
                "--xinferPython=" + System.getProperty("xinfer.python")));
    args.addAll(List.of(more));
    return args.toArray(new String[0]);
  }

  @Test
  public void everyRecordIsPredictedAsThePlainPythonModelDoesOnEachRunner() throws Exception {
    for (String[] runner : TestRunners.EMBEDDED) {
      checkRun(runner);
    }
  }

  private void checkRun(String[] runner) throws Exception {
    String name = runner[0];
    Path output = tmp.getRoot().toPath().resolve(name).resolve("predictions");
    List<String> flags = new ArrayList<>(List.of(runner).subList(1, runner.length));
    flags.add("--runner=" + name);
    Launcher.Summary summary =
        Launcher.run(
            args(Digits.dataset(), output, flags.toArray(new String[0])),
            DigitsPipeline.Options.class,
            DigitsPipeline::build);

    Map<Long, Digits.Expected> reference = Digits.reference();
    Set<Long> seen = new HashSet<>();
    for (Path shard : Launcher.outputShards(output.toString())) {
      for (String line : Files.readAllLines(shard, StandardCharsets.UTF_8)) {
        String[] cells = line.split(",");
        long id = Long.parseLong(cells[0]);
        assertTrue(name + ": duplicate prediction for " + id, seen.add(id));
        Digits.Expected expected = reference.get(id);
        assertEquals(
            name + ": class of record " + id, expected.predictedClass, Long.parseLong(cells[2]));
        assertEquals(Digits.MODEL_NAME, cells[3]);
        List<Float> scores = new ArrayList<>();
        for (int i = 4; i < cells.length; i++) {
          scores.add(Float.parseFloat(cells[i]));
        }
        assertTrue(name + ": scores of record " + id, Digits.sameScores(expected.scores, scores));
      }
    }
    assertEquals(name + ": one prediction per record", reference.keySet(), seen);
    assertEquals(1797, summary.records);
    assertEquals(0, summary.failed());
    assertTrue(name + ": accuracy " + summary.accuracy(), summary.accuracy() >= 0.9);
    assertThat(summary.toString(), containsString("records=1797 failed=0 accuracy="));
    assertThat(
        summary.toString(), containsString("runner=" + name + " mode=batch model=digits-mlp"));
  }

  /** Kafka of `./xinfer cluster up kafka`, as the build passes it (-Dxinfer.kafka). */
  private static String kafka() {
    String servers = System.getProperty("xinfer.kafka", "127.0.0.1:9092");
    try (java.net.Socket socket = new java.net.Socket()) {
      int colon = servers.lastIndexOf(':');
      socket.connect(
          new java.net.InetSocketAddress(
              servers.substring(0, colon), Integer.parseInt(servers.substring(colon + 1))),
          2000);
    } catch (java.io.IOException e) {
      throw new IllegalStateException(
          "No Kafka broker at " + servers + ": start it with ./xinfer cluster up kafka", e);
    }
    return servers;
  }

  /** Every message on {@code topic}, read from its start. */
  private static List<String> readTopic(String servers, String topic, int expected) {
    java.util.Properties props = new java.util.Properties();
    props.put("bootstrap.servers", servers);
    props.put("group.id", "xinfer-it-" + System.nanoTime());
    props.put("auto.offset.reset", "earliest");
    List<String> values = new ArrayList<>();
    try (org.apache.kafka.clients.consumer.KafkaConsumer<Long, String> consumer =
        new org.apache.kafka.clients.consumer.KafkaConsumer<>(
            props,
            new org.apache.kafka.common.serialization.LongDeserializer(),
            new org.apache.kafka.common.serialization.StringDeserializer())) {
      consumer.subscribe(List.of(topic));
      long deadline = System.nanoTime() + 30_000_000_000L;
      int quietPolls = 0;
      while (System.nanoTime() < deadline && (values.size() < expected || quietPolls < 3)) {
        int before = values.size();
        consumer.poll(java.time.Duration.ofMillis(500)).forEach(r -> values.add(r.value()));
        quietPolls = values.size() == before ? quietPolls + 1 : 0;
      }
    }
    return values;
  }

  @Test
  public void streamingOnFlinkDeliversExactlyOnePredictionPerRecord() throws Exception {
    String servers = kafka();
    String run = "xinfer-it-" + System.nanoTime();
    int records = 600;
    Path output = tmp.getRoot().toPath().resolve("streaming").resolve("predictions");
    Launcher.Summary summary =
        Launcher.run(
            args(
                Digits.dataset(),
                output,
                "--runner=FlinkRunner",
                "--streaming",
                "--checkpointingInterval=5000",
                "--bootstrapServers=" + servers,
                "--inputTopic=" + run + "-in",
                "--outputTopic=" + run + "-out",
                "--records=" + records,
                "--rate=400",
                "--resultTimeoutSeconds=180"),
            DigitsPipeline.Options.class,
            DigitsPipeline::build);

    // What the job wrote, read back independently of the launcher.
    List<String> written = readTopic(servers, run + "-out", records);
    assertEquals("predictions on the output topic", records, written.size());
    Map<Long, Digits.Expected> reference = Digits.reference();
    Set<Long> ids = new HashSet<>();
    for (String line : written) {
      String[] cells = line.split(",");
      long id = Long.parseLong(cells[0]);
      assertTrue("duplicate prediction for " + id, ids.add(id));
      assertEquals(
          "class of record " + id, reference.get(id).predictedClass, Long.parseLong(cells[2]));
      List<Float> scores = new ArrayList<>();
      for (int i = 4; i < cells.length; i++) {
        scores.add(Float.parseFloat(cells[i]));
      }
      assertTrue("scores of record " + id, Digits.sameScores(reference.get(id).scores, scores));
    }
    assertEquals(records, summary.records);
    assertEquals(0, summary.failed());
    assertTrue("accuracy " + summary.accuracy(), summary.accuracy() >= 0.9);
    assertThat(summary.toString(), containsString("runner=FlinkRunner mode=streaming"));
  }

  @Test
  public void streamingOnSparkSaysAtSubmitWhyItCannotReadKafka() {
    String servers = kafka();
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                Launcher.run(
                    args(
                        Digits.dataset(),
                        tmp.getRoot().toPath().resolve("spark-streaming"),
                        "--runner=SparkRunner",
                        "--sparkMaster=local[2]",
                        "--streaming",
                        "--bootstrapServers=" + servers,
                        "--records=10"),
                    DigitsPipeline.Options.class,
                    DigitsPipeline::build));
    assertThat(
        e.getMessage(),
        containsString(
            "SparkRunner cannot run this streaming pipeline: Beam 2.62.0's portable Spark runner "
                + "has no unbounded reads in streaming mode"));
    assertThat(e.getMessage(), containsString("run it with --runner=FlinkRunner"));
  }

  @Test
  public void aNonNumericPixelFailsTheRunNamingRecordAndColumn() throws Exception {
    Path input = tmp.newFile("bad.csv").toPath();
    List<String> lines = new ArrayList<>(Files.readAllLines(Digits.dataset()).subList(0, 4));
    lines.add(lines.get(3).replaceFirst("^[0-9]+,", "77,").replaceFirst(",([0-9.]+)$", ",abc"));
    Files.write(input, lines, StandardCharsets.UTF_8);
    Exception e =
        assertThrows(
            Exception.class,
            () ->
                Launcher.run(
                    args(input, tmp.getRoot().toPath().resolve("out")),
                    DigitsPipeline.Options.class,
                    DigitsPipeline::build));
    assertThat(e.getMessage(), containsString("Record id=77: field 'features' value 63 ('abc'"));
    assertThat(e.getMessage(), containsString("is not a number"));
  }

  @Test
  public void unsupportedRunnersGetOneClearSentence() {
    for (String runner : List.of("DirectRunner", "DataflowRunner")) {
      IllegalArgumentException e =
          assertThrows(
              IllegalArgumentException.class,
              () ->
                  Launcher.run(
                      args(Digits.dataset(), tmp.getRoot().toPath(), "--runner=" + runner),
                      DigitsPipeline.Options.class,
                      DigitsPipeline::build));
      assertThat(e.getMessage(), containsString("cannot run on " + runner));
      assertFalse(e.getMessage().contains("Exception"));
    }
  }
}
