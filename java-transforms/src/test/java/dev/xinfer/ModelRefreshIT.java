package dev.xinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.Predicate;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.GenerateSequence;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * Model refresh during a streaming run on the embedded portable Flink runner: a new version dropped
 * into the watched folder serves the records after it, without restarting the job, and each output
 * carries the id of the version that made it. Batching waits at most 200 ms (Beam's stateful
 * batching, in the Python stage).
 */
@RunWith(JUnit4.class)
public class ModelRefreshIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(8);

  private static final int WANTED_PER_VERSION = 40;

  @Rule public TemporaryFolder tmp = new TemporaryFolder();

  /** Digits examples, one per sequence number (cycling), as the example schema's Rows. */
  static class ToExample extends DoFn<Long, Row> {
    private final ArrayList<List<Float>> features = new ArrayList<>();
    private final ArrayList<Long> labels = new ArrayList<>();

    ToExample() {
      for (Digits.Example e : Digits.examples()) {
        features.add(new ArrayList<>(e.features));
        labels.add(e.label);
      }
    }

    @ProcessElement
    public void process(@Element Long i, OutputReceiver<Row> out) {
      int at = (int) (i % features.size());
      out.output(
          Row.withSchema(Digits.EXAMPLE_SCHEMA)
              .addValues((long) at, labels.get(at), features.get(at))
              .build());
    }
  }

  /** Appends each prediction as a line {@code model_id,id,s0,...} to a file, in output order. */
  static class AppendTo extends DoFn<Row, Void> {
    private final String file;

    AppendTo(String file) {
      this.file = file;
    }

    @ProcessElement
    public void process(@Element Row prediction) throws IOException {
      String line =
          prediction.getString("model_id")
              + ","
              + prediction.getInt64("id")
              + ","
              + prediction.<Float>getArray("scores").stream()
                  .map(String::valueOf)
                  .collect(Collectors.joining(","))
              + "\n";
      Files.write(
          Path.of(file),
          line.getBytes(StandardCharsets.UTF_8),
          StandardOpenOption.CREATE,
          StandardOpenOption.APPEND);
    }
  }

  @Test
  public void aNewVersionServesLaterRecordsWithItsId() throws Exception {
    Path watched = tmp.newFolder("digits").toPath();
    Path out = tmp.getRoot().toPath().resolve("predictions.csv");
    publish(Path.of(Digits.model("digits-mlp")), watched, "v1");

    Pipeline p = TestRunners.pipeline("FlinkRunner", "--parallelism=1");
    p.getOptions().as(StreamingOptions.class).setStreaming(true);
    p.apply(GenerateSequence.from(0).withRate(100, org.joda.time.Duration.standardSeconds(1)))
        .apply(ParDo.of(new ToExample()))
        .setRowSchema(Digits.EXAMPLE_SCHEMA)
        .apply(
            RunInference.withModel(watched.resolve("v*").toString())
                .withModelRefresh(java.time.Duration.ofSeconds(1))
                .withMaxBatchSize(16)
                .withMaxBatchWait(java.time.Duration.ofMillis(200)))
        .apply(ParDo.of(new AppendTo(out.toString())));
    PipelineResult result = p.run();
    try {
      awaitLines(out, l -> l.startsWith("v1,"), WANTED_PER_VERSION, 180);
      publish(Path.of(Digits.model("digits-mlp-v2")), watched, "v2");
      awaitLines(out, l -> l.startsWith("v2,"), WANTED_PER_VERSION, 120);
    } finally {
      result.cancel();
    }

    List<String> lines = Files.readAllLines(out);
    Map<Long, Digits.Expected> v1 = Digits.reference("digits-mlp");
    Map<Long, Digits.Expected> v2 = Digits.reference("digits-mlp-v2");
    boolean swapped = false;
    int checked = 0;
    // Records whose scores only the model named could have made (confident predictions can agree).
    int distinguishable = 0;
    for (String line : lines) {
      String[] cells = line.split(",");
      String modelId = cells[0];
      long id = Long.parseLong(cells[1]);
      List<Float> scores = new ArrayList<>();
      for (int i = 2; i < cells.length; i++) {
        scores.add(Float.parseFloat(cells[i]));
      }
      if (swapped) {
        assertEquals("after the swap, record " + id + " came from " + modelId, "v2", modelId);
      }
      swapped |= modelId.equals("v2");
      Digits.Expected expected = (modelId.equals("v2") ? v2 : v1).get(id);
      assertTrue(modelId + " scores of " + id, Digits.sameScores(expected.scores, scores));
      if (!Digits.sameScores((modelId.equals("v2") ? v1 : v2).get(id).scores, scores)) {
        distinguishable++;
      }
      checked++;
    }
    assertTrue(swapped);
    assertTrue(checked >= 2 * WANTED_PER_VERSION);
    assertTrue(distinguishable + " of " + checked, distinguishable > checked / 2);
  }

  /** Copies a model under a hidden name, then renames it into the watched folder. */
  private static void publish(Path model, Path watched, String version) throws IOException {
    Path staging = watched.resolve("." + version);
    try (Stream<Path> files = Files.walk(model)) {
      for (Path source : (Iterable<Path>) files::iterator) {
        Files.copy(source, staging.resolve(model.relativize(source).toString()));
      }
    }
    Files.move(staging, watched.resolve(version), StandardCopyOption.ATOMIC_MOVE);
  }

  private static void awaitLines(Path file, Predicate<String> match, int wanted, int seconds)
      throws InterruptedException {
    long deadline = System.nanoTime() + seconds * 1_000_000_000L;
    long found = 0;
    while (System.nanoTime() < deadline) {
      if (Files.exists(file)) {
        try {
          found = Files.readAllLines(file).stream().filter(match).count();
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
        if (found >= wanted) {
          return;
        }
      }
      Thread.sleep(250);
    }
    throw new AssertionError(
        "waited "
            + seconds
            + " s for "
            + wanted
            + " matching predictions in "
            + file
            + "; found "
            + found);
  }
}
