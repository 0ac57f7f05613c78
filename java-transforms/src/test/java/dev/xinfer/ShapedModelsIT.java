package dev.xinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * Models whose inputs and outputs are not one float array and scores, from Java, on the embedded
 * portable Flink runner (the two-input model also on Spark and the DirectRunner): named inputs of
 * several types, a shape the model file does not record, several typed outputs, a regressor's one
 * number, Beam's own scikit-learn {@code ModelHandler}. Set-up trained each model on data that
 * ships in scikit-learn ({@code xinfer_digits.shaped}) and wrote what it computes in plain Python
 * for every record ({@code <model>.reference.jsonl}); every output here is checked against that.
 * Each test also checks, by the {@code packed_records} counter, whether its records ran in blocks
 * (numeric inputs and outputs as tensors) or one by one (strings, hooks, a Beam ModelHandler).
 */
@RunWith(JUnit4.class)
public class ShapedModelsIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(5);

  private static final int N = 200;

  /**
   * A digit as an 8x8 grid of pixels, its ink count, and its pixels as text (not a model input).
   */
  static final Schema DIGIT =
      Schema.builder()
          .addInt64Field("id")
          .addArrayField("pixels", FieldType.FLOAT)
          .addArrayField("grid", FieldType.array(FieldType.FLOAT))
          .addInt64Field("inked")
          .build();

  static List<Row> digits(int n) {
    List<Row> rows = new ArrayList<>();
    for (Digits.Example e : Digits.examples().subList(0, n)) {
      List<List<Float>> grid = new ArrayList<>();
      long inked = 0;
      for (int r = 0; r < 8; r++) {
        grid.add(e.features.subList(8 * r, 8 * r + 8));
      }
      for (float v : e.features) {
        inked += v > 0 ? 1 : 0;
      }
      rows.add(Row.withSchema(DIGIT).addValues(e.id, e.features, grid, inked).build());
    }
    return rows;
  }

  static final Schema DIABETES =
      Schema.builder().addInt64Field("id").addArrayField("features", FieldType.DOUBLE).build();

  static List<Row> diabetes() {
    List<Row> rows = new ArrayList<>();
    for (String line : lines(Digits.modelsDir().resolve("diabetes.csv"))) {
      String[] cells = line.split(",");
      List<Double> features = new ArrayList<>();
      for (int i = 2; i < cells.length; i++) {
        features.add(Double.parseDouble(cells[i]));
      }
      rows.add(Row.withSchema(DIABETES).addValues(Long.parseLong(cells[0]), features).build());
    }
    return rows;
  }

  /**
   * A check for {@code PAssert.satisfies}: one prediction per id in {@code 0..n-1}, each output in
   * {@code outputs} equal (to float32 rounding) to the model's plain-Python output, and {@code
   * model_id} as given.
   */
  static SerializableFunction<Iterable<Row>, Void> matchesReference(
      String model, int n, String modelId, String... outputs) {
    return predictions -> {
      Map<Long, JsonNode> expected = reference(model);
      Map<Long, Row> byId = new HashMap<>();
      for (Row row : predictions) {
        assertEquals("duplicate prediction", null, byId.put(row.getInt64("id"), row));
        assertEquals(modelId, row.getString(RunInference.MODEL_ID_FIELD));
      }
      assertEquals(n, byId.size());
      byId.forEach(
          (id, row) -> {
            for (String output : outputs) {
              assertSame(
                  model + " id " + id + " " + output,
                  expected.get(id).get(output),
                  row.getValue(output));
            }
          });
      return null;
    };
  }

  private static void assertSame(String what, JsonNode expected, Object actual) {
    if (expected.isArray()) {
      List<?> values = (List<?>) actual;
      assertEquals(what + " length", expected.size(), values.size());
      for (int i = 0; i < values.size(); i++) {
        assertSame(what + "[" + i + "]", expected.get(i), values.get(i));
      }
    } else if (expected.isIntegralNumber()) {
      assertEquals(what, expected.asLong(), ((Number) actual).longValue());
    } else {
      double want = expected.asDouble();
      double got = ((Number) actual).doubleValue();
      assertTrue(
          what + ": " + got + " but plain Python gave " + want,
          Math.abs(want - got) <= 1e-5 + 1e-5 * Math.abs(want));
    }
  }

  static Map<Long, JsonNode> reference(String model) {
    ObjectMapper json = new ObjectMapper();
    Map<Long, JsonNode> byId = new HashMap<>();
    try {
      for (String line :
          Files.readAllLines(
              Digits.modelsDir().resolve(model + ".reference.jsonl"), StandardCharsets.UTF_8)) {
        JsonNode node = json.readTree(line);
        byId.put(node.get("id").asLong(), node);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return byId;
  }

  private static List<String> lines(Path csv) {
    try {
      List<String> lines = Files.readAllLines(csv, StandardCharsets.UTF_8);
      return lines.subList(1, lines.size());
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private static Pipeline flink() {
    return TestRunners.pipeline("FlinkRunner", "--parallelism=1");
  }

  /**
   * The counter of records the model ran as part of a block's tensors (Python's {@code
   * xinfer.metrics.PACKED_RECORDS}): the packed path, not record by record.
   */
  static final String PACKED_RECORDS = "packed_records";

  /** Runs {@code p} to the end; its RunInference metrics. */
  static InferenceMetrics run(Pipeline p) {
    PipelineResult result = p.run();
    result.waitUntilFinish();
    return InferenceMetrics.of(result);
  }

  /**
   * A TorchScript CNN: the 8x8 grid reshaped to the 8x8x1 image it takes, two outputs in order; the
   * device named (the CPU: this machine has no GPU).
   */
  @Test
  public void anImageCnnWithAShapeGivenAndTwoOutputs() {
    Pipeline p = flink();
    PCollection<Row> predictions =
        p.apply(Create.of(digits(N)).withRowSchema(DIGIT))
            .apply(
                RunInference.withModel(Model.of(Digits.model("digits-cnn.pt")).withDevice("cpu"))
                    .withInput("images", "grid")
                    .withInputShape("images", 8, 8, 1)
                    .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
                    .withOutput("embedding", FieldType.array(FieldType.FLOAT))
                    .withMaxBatchSize(64));
    PAssert.that(predictions)
        .satisfies(
            matchesReference("digits-cnn.pt", N, "digits-cnn.pt", "probabilities", "embedding"));
    InferenceMetrics metrics = run(p);
    // The grids crossed as one tensor per block and the outputs came back as tensors.
    assertEquals(metrics.toString(), N, metrics.counter(PACKED_RECORDS));
    assertEquals(N, metrics.predictions());
  }

  /**
   * A SavedModel with two named inputs (float pixels, an INT64 count) and two named outputs (an
   * INT64 and an array), on each runner; an output declared with a type the model does not return
   * makes each record a dead letter that says so.
   */
  @Test
  public void twoNamedInputsAndTwoNamedOutputsOnEachRunner() {
    String model = Digits.model("digits-two-input");
    RunInference inference =
        RunInference.withModel(model)
            .withInput("pixels", "pixels")
            .withInput("ink", "inked")
            .withOutput("digit", FieldType.INT64)
            .withOutput("probabilities", FieldType.array(FieldType.FLOAT));
    List<String[]> runners = new ArrayList<>(TestRunners.EMBEDDED);
    runners.add(new String[] {"DirectRunner"});
    for (String[] runner : runners) {
      String[] flags = java.util.Arrays.copyOfRange(runner, 1, runner.length);
      Pipeline p = TestRunners.pipeline(runner[0], flags);
      PCollection<Row> predictions =
          p.apply(Create.of(digits(N)).withRowSchema(DIGIT)).apply(inference);
      assertEquals(inference.predictionSchema(DIGIT), predictions.getSchema());
      PAssert.that(predictions)
          .satisfies(
              matchesReference(
                  "digits-two-input", N, "digits-two-input", "digit", "probabilities"));
      InferenceMetrics metrics = run(p);
      // Both inputs crossed as tensors, the two outputs came back as tensors.
      assertEquals(runner[0] + ": " + metrics, N, metrics.counter(PACKED_RECORDS));
    }

    Pipeline p = flink();
    WithFailures.Result<PCollection<Row>, Row> wrongType =
        p.apply(Create.of(digits(20)).withRowSchema(DIGIT))
            .apply(
                RunInference.withModel(model)
                    .withInput("pixels", "pixels")
                    .withInput("ink", "inked")
                    .withOutput("digit", FieldType.STRING)
                    .withFailures());
    PAssert.that(wrongType.output()).empty();
    PAssert.that(wrongType.failures())
        .satisfies(
            failures -> {
              int count = 0;
              for (Row failure : failures) {
                count++;
                assertEquals("postprocessing", failure.getString(RunInference.STAGE_FIELD));
                assertTrue(
                    failure.getString(RunInference.ERROR_MESSAGE_FIELD),
                    failure
                            .getString(RunInference.ERROR_MESSAGE_FIELD)
                            .contains("output 'digit' is a int64 scalar (")
                        && failure
                            .getString(RunInference.ERROR_MESSAGE_FIELD)
                            .contains("it was declared STRING"));
              }
              assertEquals(20, count);
              return null;
            });
    InferenceMetrics metrics = run(p);
    // A STRING output does not cross in blocks: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
    assertEquals(20, metrics.failures());
  }

  /**
   * The two-input SavedModel on the packed path with two bad records: one of another length (Java
   * sends its block without tensors) and one holding NaN (Python finds it in the block's tensor).
   * Each fails alone, with the stage and message it gets without blocks; the other records of their
   * blocks run record by record and match plain Python; records in = predictions + failures.
   */
  @Test
  public void badRecordsInBlocksFailAloneAndTheRestMatchPlainPython() {
    List<Row> rows = new ArrayList<>(digits(N));
    Row template = rows.get(0);
    List<Float> nan = new ArrayList<>(template.getArray("pixels"));
    nan.set(5, Float.NaN);
    rows.add(
        40,
        Row.withSchema(DIGIT)
            .addValues(
                9001L,
                template.getArray("pixels").stream()
                    .skip(1)
                    .collect(java.util.stream.Collectors.toList()),
                template.getValue("grid"),
                1L)
            .build());
    rows.add(
        150, Row.withSchema(DIGIT).addValues(9002L, nan, template.getValue("grid"), 1L).build());
    Pipeline p = flink();
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(rows).withRowSchema(DIGIT))
            .apply(
                RunInference.withModel(Digits.model("digits-two-input"))
                    .withInput("pixels", "pixels")
                    .withInput("ink", "inked")
                    .withOutput("digit", FieldType.INT64)
                    .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
                    .withMaxBatchSize(64)
                    .withFailures());
    PAssert.that(result.output())
        .satisfies(
            matchesReference("digits-two-input", N, "digits-two-input", "digit", "probabilities"));
    PAssert.that(result.failures())
        .satisfies(
            failures -> {
              Map<Long, Row> byId = new HashMap<>();
              for (Row failure : failures) {
                byId.put(failure.getRow("input").getInt64("id"), failure);
              }
              assertEquals(2, byId.size());
              for (Row failure : byId.values()) {
                assertEquals("conversion", failure.getString(RunInference.STAGE_FIELD));
                assertEquals("RecordError", failure.getString(RunInference.ERROR_TYPE_FIELD));
                assertEquals("digits-two-input", failure.getString(RunInference.MODEL_ID_FIELD));
              }
              String shortRow = byId.get(9001L).getString(RunInference.ERROR_MESSAGE_FIELD);
              assertTrue(
                  shortRow,
                  shortRow.contains(
                      "field 'pixels' has 63 values; the model input (None, 64) needs 64 per "
                          + "record"));
              String nanRow = byId.get(9002L).getString(RunInference.ERROR_MESSAGE_FIELD);
              assertTrue(nanRow, nanRow.contains("field 'pixels'[5] is nan"));
              return null;
            });
    InferenceMetrics metrics = run(p);
    assertEquals(metrics.toString(), N + 2, metrics.inferences());
    assertEquals(N, metrics.predictions());
    assertEquals(2, metrics.failures());
    // At most the two blocks that held a bad record went record by record.
    long packed = metrics.counter(PACKED_RECORDS);
    assertTrue(metrics.toString(), packed >= N + 2 - 2 * 64 && packed < N + 2);
  }

  /** An XGBoost regressor: one DOUBLE per record, no class. */
  @Test
  public void anXgboostRegressorGivesOneNumber() {
    List<Row> rows = diabetes();
    Pipeline p = flink();
    PCollection<Row> predictions =
        p.apply(Create.of(rows).withRowSchema(DIABETES))
            .apply(
                RunInference.withModel(Digits.model("diabetes.xgb.json"))
                    .withOutput("prediction", FieldType.DOUBLE));
    assertEquals(
        List.of("id", "features", "prediction", "model_id"),
        predictions.getSchema().getFieldNames());
    PAssert.that(predictions)
        .satisfies(
            matchesReference("diabetes.xgb.json", rows.size(), "diabetes.xgb.json", "prediction"));
    InferenceMetrics metrics = run(p);
    // A DOUBLE array in, a DOUBLE out: both cross in blocks.
    assertEquals(metrics.toString(), rows.size(), metrics.counter(PACKED_RECORDS));
  }

  /**
   * Beam's own scikit-learn {@code ModelHandler}, made by a factory named from Java, with xinfer's
   * dead letters: a record of the wrong length fails alone, and records in = predictions +
   * failures.
   */
  @Test
  public void aBeamModelHandlerWithDeadLetters() {
    List<Row> rows = new ArrayList<>();
    for (Row example : Digits.exampleRows(N)) {
      rows.add(example);
    }
    Row shortRow =
        Row.withSchema(Digits.EXAMPLE_SCHEMA).addValues(9999L, 0L, List.of(1f, 2f, 3f)).build();
    rows.add(shortRow);
    Pipeline p = flink();
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(rows).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(
                RunInference.withModel(
                        Model.ofHandler(
                            "xinfer.examples.handlers:beam_sklearn",
                            Map.of("model_uri", Digits.model("digits-sklearn.joblib"))))
                    .withOutput("digit", FieldType.INT64)
                    .withFailures());
    Map<Long, Digits.Expected> expected = Digits.reference("digits-sklearn.joblib");
    PAssert.that(result.output())
        .satisfies(
            predictions -> {
              int count = 0;
              for (Row row : predictions) {
                count++;
                assertEquals(
                    expected.get(row.getInt64("id")).predictedClass, (long) row.getInt64("digit"));
                assertEquals(
                    "xinfer.examples.handlers:beam_sklearn",
                    row.getString(RunInference.MODEL_ID_FIELD));
              }
              assertEquals(N, count);
              return null;
            });
    PAssert.that(result.failures())
        .satisfies(
            failures -> {
              int count = 0;
              for (Row failure : failures) {
                count++;
                assertEquals(9999L, (long) failure.getRow("input").getInt64("id"));
                assertEquals("inference", failure.getString(RunInference.STAGE_FIELD));
                assertTrue(
                    failure.getString(RunInference.ERROR_MESSAGE_FIELD),
                    failure.getString(RunInference.ERROR_MESSAGE_FIELD).contains("64 features"));
              }
              assertEquals(1, count);
              return null;
            });
    InferenceMetrics metrics = run(p);
    // A Beam ModelHandler takes a list of records, not tensors: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
  }

  static final Schema PHRASE =
      Schema.builder().addInt64Field("id").addStringField("phrase").build();

  static List<Row> phrases(int n) {
    List<Row> rows = new ArrayList<>();
    for (String line : lines(Digits.modelsDir().resolve("vader.csv")).subList(0, n)) {
      // id,phrase,rating,label: the phrase may hold commas (CSV-quoted).
      int first = line.indexOf(',');
      int third = line.lastIndexOf(',', line.lastIndexOf(',') - 1);
      String phrase = line.substring(first + 1, third);
      if (phrase.startsWith("\"") && phrase.endsWith("\"")) {
        phrase = phrase.substring(1, phrase.length() - 1).replace("\"\"", "\"");
      }
      rows.add(
          Row.withSchema(PHRASE)
              .addValues(Long.parseLong(line.substring(0, first)), phrase)
              .build());
    }
    return rows;
  }

  /**
   * A Hugging Face text classifier (a tiny BERT and its tokenizer, trained in set-up on the VADER
   * lexicon): a STRING in, the label as a STRING and its probability out.
   */
  @Test
  public void aHuggingFaceTextClassifierGivesALabelAndItsProbability() {
    int n = 300;
    Pipeline p = flink();
    PCollection<Row> predictions =
        p.apply(Create.of(phrases(n)).withRowSchema(PHRASE))
            .apply(
                RunInference.withModel(
                        Model.of(Digits.model("vader-sentiment")).withTask("text-classification"))
                    .withInput("text", "phrase")
                    .withOutput("label", FieldType.STRING)
                    .withOutput("score", FieldType.FLOAT));
    Map<Long, JsonNode> expected = reference("vader-sentiment");
    PAssert.that(predictions)
        .satisfies(
            rows -> {
              int count = 0;
              for (Row row : rows) {
                count++;
                JsonNode want = expected.get(row.getInt64("id"));
                assertEquals(want.get("label").asText(), row.getString("label"));
                assertSame("score", want.get("score"), row.getFloat("score"));
              }
              assertEquals(n, count);
              return null;
            });
    InferenceMetrics metrics = run(p);
    // A STRING input and a STRING output: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
  }

  static final Schema PNG = Schema.builder().addInt64Field("id").addByteArrayField("png").build();

  /** Each digit as an 8x8 grayscale PNG whose gray levels are its pixels (0-16, lossless). */
  static List<Row> pngs(int n) {
    List<Row> rows = new ArrayList<>();
    for (Digits.Example e : Digits.examples().subList(0, n)) {
      java.awt.image.BufferedImage image =
          new java.awt.image.BufferedImage(8, 8, java.awt.image.BufferedImage.TYPE_BYTE_GRAY);
      for (int i = 0; i < 64; i++) {
        image.getRaster().setSample(i % 8, i / 8, 0, Math.round(e.features.get(i)));
      }
      java.io.ByteArrayOutputStream png = new java.io.ByteArrayOutputStream();
      try {
        javax.imageio.ImageIO.write(image, "png", png);
      } catch (IOException x) {
        throw new UncheckedIOException(x);
      }
      rows.add(Row.withSchema(PNG).addValues(e.id, png.toByteArray()).build());
    }
    return rows;
  }

  /** The same CNN on PNG bytes, decoded in Python by a preprocess hook. */
  @Test
  public void pngBytesDecodedInPythonByAHook() {
    Pipeline p = flink();
    PCollection<Row> predictions =
        p.apply(Create.of(pngs(N)).withRowSchema(PNG))
            .apply(
                RunInference.withModel(Digits.model("digits-cnn.pt"))
                    .withPreprocess("xinfer.examples.hooks:decode_png")
                    .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
                    .withOutput("embedding", FieldType.array(FieldType.FLOAT)));
    PAssert.that(predictions)
        .satisfies(
            matchesReference("digits-cnn.pt", N, "digits-cnn.pt", "probabilities", "embedding"));
    InferenceMetrics metrics = run(p);
    // A hook takes and gives single records: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
  }
}
