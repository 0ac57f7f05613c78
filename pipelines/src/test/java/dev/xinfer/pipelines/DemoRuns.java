package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Runs the demo pipeline through its launcher, as {@code ./xinfer demo} does, and checks every
 * prediction against what the model computes in plain Python.
 */
final class DemoRuns {
  private DemoRuns() {}

  /** Launcher arguments: the demo data and model, the build's Python, then {@code more}. */
  static String[] args(Path input, Path output, String... more) {
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

  /** Runs the pipeline in batch over every record and checks every prediction file line. */
  static Launcher.Summary batch(Path output, String runner, String... flags) throws IOException {
    List<String> all = new ArrayList<>(List.of(flags));
    all.add("--runner=" + runner);
    Launcher.Summary summary =
        Launcher.run(
            args(Digits.dataset(), output, all.toArray(new String[0])),
            DigitsPipeline.Options.class,
            DigitsPipeline::build);
    List<String> lines = new ArrayList<>();
    for (Path shard : Launcher.outputShards(output.toString())) {
      lines.addAll(Files.readAllLines(shard, StandardCharsets.UTF_8));
    }
    checkPredictions(runner, lines, 1797);
    assertEquals(1797, summary.records);
    assertEquals(0, summary.failed());
    assertThat(summary.toString(), containsString("runner=" + runner + " mode=batch"));
    return summary;
  }

  /**
   * Runs the pipeline in streaming mode over the first {@code records} records through Kafka, and
   * checks what the job wrote to its output topic, read back independently of the launcher.
   */
  static Launcher.Summary streaming(Path output, String runner, int records, String... flags)
      throws IOException {
    String servers = kafka();
    String run = "xinfer-it-" + System.nanoTime();
    List<String> all = new ArrayList<>(List.of(flags));
    all.addAll(
        List.of(
            "--runner=" + runner,
            "--streaming",
            "--bootstrapServers=" + servers,
            "--inputTopic=" + run + "-in",
            "--outputTopic=" + run + "-out",
            "--records=" + records,
            "--resultTimeoutSeconds=240"));
    if (all.stream().noneMatch(flag -> flag.startsWith("--rate="))) {
      all.add("--rate=400");
    }
    Launcher.Summary summary =
        Launcher.run(
            args(Digits.dataset(), output, all.toArray(new String[0])),
            DigitsPipeline.Options.class,
            DigitsPipeline::build);
    checkPredictions(runner, readTopic(servers, run + "-out", records), records);
    assertEquals(records, summary.records);
    assertEquals(0, summary.failed());
    assertThat(summary.toString(), containsString("runner=" + runner + " mode=streaming"));
    return summary;
  }

  /**
   * Exactly one prediction line ({@code id,label,predicted_class,model_id,scores...}) per record
   * {@code 0..records-1}, each equal to the plain-Python reference; accuracy at least 0.9.
   */
  static void checkPredictions(String runner, List<String> lines, int records) {
    Map<Long, Digits.Expected> reference = Digits.reference();
    Set<Long> ids = new HashSet<>();
    long correct = 0;
    for (String line : lines) {
      String[] cells = line.split(",");
      long id = Long.parseLong(cells[0]);
      assertTrue(runner + ": duplicate prediction for " + id, ids.add(id));
      Digits.Expected expected = reference.get(id);
      long predicted = Long.parseLong(cells[2]);
      assertEquals(runner + ": class of record " + id, expected.predictedClass, predicted);
      assertEquals(Digits.MODEL_NAME, cells[3]);
      List<Float> scores = new ArrayList<>();
      for (int i = 4; i < cells.length; i++) {
        scores.add(Float.parseFloat(cells[i]));
      }
      assertTrue(runner + ": scores of record " + id, Digits.sameScores(expected.scores, scores));
      if (Long.parseLong(cells[1]) == predicted) {
        correct++;
      }
    }
    assertEquals(runner + ": one prediction per record", records, ids.size());
    for (long id = 0; id < records; id++) {
      assertTrue(runner + ": no prediction for " + id, ids.contains(id));
    }
    assertTrue(runner + ": accuracy " + (double) correct / records, correct >= 0.9 * records);
  }

  /** Kafka of `./xinfer cluster up kafka`, as the build passes it (-Dxinfer.kafka). */
  static String kafka() {
    String servers = System.getProperty("xinfer.kafka", "127.0.0.1:9092");
    int colon = servers.lastIndexOf(':');
    try (Socket socket = new Socket()) {
      socket.connect(
          new InetSocketAddress(
              servers.substring(0, colon), Integer.parseInt(servers.substring(colon + 1))),
          2000);
    } catch (IOException e) {
      throw new IllegalStateException(
          "No Kafka broker at " + servers + ": start it with ./xinfer cluster up kafka", e);
    }
    return servers;
  }

  /** Every message on {@code topic}, read from its start until it has been quiet a while. */
  static List<String> readTopic(String servers, String topic, int expected) {
    Properties props = new Properties();
    props.put("bootstrap.servers", servers);
    props.put("group.id", "xinfer-it-" + System.nanoTime());
    props.put("auto.offset.reset", "earliest");
    // What a downstream reader of an exactly-once topic sees: committed writes only.
    props.put("isolation.level", "read_committed");
    List<String> values = new ArrayList<>();
    try (KafkaConsumer<Long, String> consumer =
        new KafkaConsumer<>(props, new LongDeserializer(), new StringDeserializer())) {
      consumer.subscribe(List.of(topic));
      long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
      int quietPolls = 0;
      while (System.nanoTime() < deadline && (values.size() < expected || quietPolls < 3)) {
        int before = values.size();
        consumer.poll(Duration.ofMillis(500)).forEach(r -> values.add(r.value()));
        quietPolls = values.size() == before ? quietPolls + 1 : 0;
      }
    }
    return values;
  }
}
