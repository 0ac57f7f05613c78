package dev.xinfer.testing;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;

/**
 * The demo data, model and reference predictions written by {@code ./xinfer setup} (Python's {@code
 * xinfer.digits prepare}), as tests read them.
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

  private Digits() {}

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
    HashMap<Long, Expected> reference = new HashMap<>();
    for (String[] cells : csv(modelsDir().resolve(MODEL_NAME + ".reference.csv"))) {
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
