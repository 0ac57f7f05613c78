package dev.xinfer.testing;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.values.Row;

/**
 * The demo data, model and reference predictions written by {@code ./xinfer setup} (Python's {@code
 * xinfer_digits prepare}), as tests read them.
 */
public final class Digits {
  public static final String MODEL_NAME = "digits-mlp";
  public static final int FEATURES = 64;

  /** One reference prediction: what the SavedModel computes in plain Python. */
  public static final class Expected implements Serializable {
    public final long predictedClass;
    public final float[] scores;

    Expected(long predictedClass, float[] scores) {
      this.predictedClass = predictedClass;
      this.scores = scores;
    }
  }

  /** One labelled example. */
  public static final class Example {
    public final long id;
    public final long label;
    public final List<Float> features;

    Example(long id, long label, List<Float> features) {
      this.id = id;
      this.label = label;
      this.features = features;
    }
  }

  /** The examples as Rows: {@code id INT64, label INT64, features ARRAY<FLOAT>}. */
  public static final Schema EXAMPLE_SCHEMA =
      Schema.builder()
          .addInt64Field("id")
          .addInt64Field("label")
          .addArrayField("features", FieldType.FLOAT)
          .build();

  private Digits() {}

  /** The first {@code n} examples as Rows of {@link #EXAMPLE_SCHEMA}. */
  public static List<Row> exampleRows(int n) {
    List<Row> rows = new ArrayList<>();
    for (Example e : examples().subList(0, n)) {
      rows.add(Row.withSchema(EXAMPLE_SCHEMA).addValues(e.id, e.label, e.features).build());
    }
    return rows;
  }

  /**
   * A check for {@code PAssert.satisfies}: exactly one prediction for each of ids {@code 0..n-1},
   * each equal to what the demo model computes in plain Python, with accuracy at least 0.9.
   */
  public static SerializableFunction<Iterable<Row>, Void> matchesReference(int n) {
    return matchesReference(n, MODEL_NAME, MODEL_NAME, false);
  }

  /**
   * As {@link #matchesReference(int)}, against {@code <referenceName>.reference.csv}, each output
   * carrying {@code modelId}; with {@code logScores}, the scores are the log of the reference's
   * (the {@code xinfer.examples.hooks:log_scores} postprocess hook).
   */
  public static SerializableFunction<Iterable<Row>, Void> matchesReference(
      int n, String referenceName, String modelId, boolean logScores) {
    HashMap<Long, Expected> reference = reference(referenceName);
    return rows -> {
      List<Long> ids = new ArrayList<>();
      long correct = 0;
      for (Row row : rows) {
        long id = row.getInt64("id");
        ids.add(id);
        assertMatches(reference.get(id), row, logScores);
        assertEquals(modelId, row.getString("model_id"));
        if (row.getSchema().hasField("features")) {
          assertEquals(FEATURES, row.getArray("features").size());
        }
        if (row.getInt64("label").equals(row.getInt64("predicted_class"))) {
          correct++;
        }
      }
      Collections.sort(ids);
      List<Long> expectedIds = new ArrayList<>();
      for (long i = 0; i < n; i++) {
        expectedIds.add(i);
      }
      assertEquals("one output per input", expectedIds, ids);
      assertTrue("accuracy " + (double) correct / n, (double) correct / n >= 0.9);
      return null;
    };
  }

  /** Asserts that a prediction Row has the reference's class and scores. */
  public static void assertMatches(Expected expected, Row row, boolean logScores) {
    long id = row.getInt64("id");
    assertEquals(
        "class of record " + id, expected.predictedClass, (long) row.getInt64("predicted_class"));
    float[] scores = expected.scores;
    if (logScores) {
      scores = new float[expected.scores.length];
      for (int i = 0; i < scores.length; i++) {
        scores[i] = (float) Math.log(Math.max(expected.scores[i], 1e-7));
      }
    }
    List<Float> actual = new ArrayList<>(row.getArray("scores"));
    assertTrue("scores of record " + id + ": " + actual, sameScores(scores, actual));
  }

  /** The folder holding the models: {@code -Dxinfer.home}/models, set by the build. */
  public static Path modelsDir() {
    String home = System.getProperty("xinfer.home");
    if (home == null) {
      throw new IllegalStateException(
          "System property xinfer.home is not set; run the tests with ./xinfer test or mvn verify "
              + "from the repository root.");
    }
    Path dir = Paths.get(home, "models");
    if (!Files.exists(dir.resolve("prepared.json"))) {
      throw new IllegalStateException(
          "No demo model in " + dir + "; run ./xinfer setup first (it trains it).");
    }
    return dir;
  }

  public static Path model() {
    return modelsDir().resolve(MODEL_NAME);
  }

  /** One of the example models by file name, e.g. {@code digits-torch.pt}. */
  public static String model(String fileName) {
    return modelsDir().resolve(fileName).toString();
  }

  public static Path dataset() {
    return modelsDir().resolve("digits.csv");
  }

  public static List<Example> examples() {
    List<Example> examples = new ArrayList<>();
    for (String[] cells : csv(dataset())) {
      List<Float> features = new ArrayList<>(cells.length - 2);
      for (int i = 2; i < cells.length; i++) {
        features.add(Float.parseFloat(cells[i]));
      }
      examples.add(new Example(Long.parseLong(cells[0]), Long.parseLong(cells[1]), features));
    }
    return examples;
  }

  public static HashMap<Long, Expected> reference() {
    return reference(MODEL_NAME);
  }

  /** What the model {@code name} computes in plain Python ({@code <name>.reference.csv}). */
  public static HashMap<Long, Expected> reference(String name) {
    HashMap<Long, Expected> reference = new HashMap<>();
    for (String[] cells : csv(modelsDir().resolve(name + ".reference.csv"))) {
      float[] scores = new float[cells.length - 2];
      for (int i = 2; i < cells.length; i++) {
        scores[i - 2] = Float.parseFloat(cells[i]);
      }
      reference.put(Long.parseLong(cells[0]), new Expected(Long.parseLong(cells[1]), scores));
    }
    return reference;
  }

  /** Whether {@code actual} scores equal the reference to float32 rounding. */
  public static boolean sameScores(float[] expected, List<Float> actual) {
    if (expected.length != actual.size()) {
      return false;
    }
    for (int i = 0; i < expected.length; i++) {
      if (Math.abs(expected[i] - actual.get(i)) > 1e-5f + 1e-5f * Math.abs(expected[i])) {
        return false;
      }
    }
    return true;
  }

  private static List<String[]> csv(Path file) {
    try {
      List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
      List<String[]> rows = new ArrayList<>(lines.size());
      for (String line : lines.subList(1, lines.size())) {
        rows.add(line.split(","));
      }
      return rows;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
