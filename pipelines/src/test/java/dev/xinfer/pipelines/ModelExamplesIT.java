package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.xinfer.InferenceMetrics;
import dev.xinfer.RunInference;
import dev.xinfer.pipelines.ModelExamples.Example;
import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
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
 * The model examples ({@link ModelExamples}, what {@code ./xinfer demo --model NAME} runs): models
 * whose inputs and outputs are not one float array and scores, from Java, on the embedded portable
 * Flink runner (the two-input model also on Spark and the DirectRunner): named inputs of several
 * types, a shape the model file does not record, several typed outputs, a regressor's one number,
 * text, PNG bytes, Beam's own scikit-learn {@code ModelHandler}. Each test runs the example's own
 * {@code RunInference} (the README's snippets are that code) and checks every output against what
 * the model computes in plain Python ({@code <model>.reference.jsonl}, written by set-up), and, by
 * the {@code packed_records} counter, whether its records ran in blocks (numeric inputs and outputs
 * as tensors) or one by one (strings, hooks, a Beam ModelHandler).
 */
@RunWith(JUnit4.class)
public class ModelExamplesIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(5);

  private static final int N = 200;

  /**
   * The counter of records the model ran as part of a block's tensors (Python's {@code
   * xinfer.metrics.PACKED_RECORDS}): the packed path, not record by record.
   */
  static final String PACKED_RECORDS = "packed_records";

  private static Path models() {
    return Digits.modelsDir();
  }

  private static Pipeline flink() {
    return TestRunners.pipeline("FlinkRunner", "--parallelism=1");
  }

  /** The example's first {@code n} rows, created in the pipeline. */
  private static PCollection<Row> rows(Pipeline p, Example example, int n) {
    return p.apply(Create.of(example.rows(models(), n)).withRowSchema(example.schema));
  }

  /**
   * A check for {@code PAssert.satisfies}: one prediction per id in {@code 0..n-1}, each checked
   * output as plain Python computed it (strings and integers exactly, floating point to float32
   * rounding) and the example's model id.
   */
  static SerializableFunction<Iterable<Row>, Void> matchesPlainPython(Example example, int n) {
    return predictions -> {
      Map<Long, JsonNode> expected = example.reference(models());
      Map<Long, Row> byId = new HashMap<>();
      for (Row row : predictions) {
        assertEquals("duplicate prediction", null, byId.put(row.getInt64("id"), row));
        JsonNode actual = ModelExamples.toJson(row, example.checked);
        List<String> differences =
            ModelExamples.differences(example, expected.get(row.getInt64("id")), actual);
        assertTrue(String.join("; ", differences), differences.isEmpty());
      }
      assertEquals(n, byId.size());
      return null;
    };
  }

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
        rows(p, Example.IMAGE_CNN, N).apply(Example.IMAGE_CNN.inference(models()));
    PAssert.that(predictions).satisfies(matchesPlainPython(Example.IMAGE_CNN, N));
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
    RunInference inference = Example.TWO_INPUTS.inference(models());
    List<String[]> runners = new ArrayList<>(TestRunners.EMBEDDED);
    runners.add(new String[] {"DirectRunner"});
    for (String[] runner : runners) {
      String[] flags = java.util.Arrays.copyOfRange(runner, 1, runner.length);
      Pipeline p = TestRunners.pipeline(runner[0], flags);
      PCollection<Row> predictions = rows(p, Example.TWO_INPUTS, N).apply(inference);
      assertEquals(inference.predictionSchema(ModelExamples.DIGIT), predictions.getSchema());
      PAssert.that(predictions).satisfies(matchesPlainPython(Example.TWO_INPUTS, N));
      InferenceMetrics metrics = run(p);
      // Both inputs crossed as tensors, the two outputs came back as tensors.
      assertEquals(runner[0] + ": " + metrics, N, metrics.counter(PACKED_RECORDS));
    }

    Pipeline p = flink();
    WithFailures.Result<PCollection<Row>, Row> wrongType =
        rows(p, Example.TWO_INPUTS, 20)
            .apply(
                RunInference.withModel(Digits.model("digits-two-input"))
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
                String message = failure.getString(RunInference.ERROR_MESSAGE_FIELD);
                assertThat(message, containsString("output 'digit' is a int64 scalar ("));
                assertThat(message, containsString("it was declared STRING"));
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
    List<Row> rows = new ArrayList<>(Example.TWO_INPUTS.rows(models(), N));
    Row template = rows.get(0);
    List<Float> pixels = new ArrayList<>(template.<Float>getArray("pixels"));
    List<Float> nan = new ArrayList<>(pixels);
    nan.set(5, Float.NaN);
    rows.add(
        40,
        Row.withSchema(ModelExamples.DIGIT)
            .addValues(
                9001L,
                0L,
                pixels.stream().skip(1).collect(Collectors.toList()),
                template.getValue("grid"),
                1L)
            .build());
    rows.add(
        150,
        Row.withSchema(ModelExamples.DIGIT)
            .addValues(9002L, 0L, nan, template.getValue("grid"), 1L)
            .build());
    Pipeline p = flink();
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(rows).withRowSchema(ModelExamples.DIGIT))
            .apply(Example.TWO_INPUTS.inference(models()).withMaxBatchSize(64).withFailures());
    PAssert.that(result.output()).satisfies(matchesPlainPython(Example.TWO_INPUTS, N));
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
              assertThat(
                  byId.get(9001L).getString(RunInference.ERROR_MESSAGE_FIELD),
                  containsString(
                      "field 'pixels' has 63 values; the model input (None, 64) needs 64 per "
                          + "record"));
              assertThat(
                  byId.get(9002L).getString(RunInference.ERROR_MESSAGE_FIELD),
                  containsString("field 'pixels'[5] is nan"));
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
    int n = Example.REGRESSOR.rows(models(), null).size();
    Pipeline p = flink();
    PCollection<Row> predictions =
        rows(p, Example.REGRESSOR, n).apply(Example.REGRESSOR.inference(models()));
    assertEquals(
        List.of("id", "target", "features", "prediction", "model_id"),
        predictions.getSchema().getFieldNames());
    PAssert.that(predictions).satisfies(matchesPlainPython(Example.REGRESSOR, n));
    InferenceMetrics metrics = run(p);
    // A DOUBLE array in, a DOUBLE out: both cross in blocks.
    assertEquals(metrics.toString(), n, metrics.counter(PACKED_RECORDS));
  }

  /**
   * Beam's own scikit-learn {@code ModelHandler}, made by a factory named from Java, with xinfer's
   * dead letters: a record of the wrong length fails alone, and records in = predictions +
   * failures.
   */
  @Test
  public void aBeamModelHandlerWithDeadLetters() {
    List<Row> rows = new ArrayList<>(Example.BEAM_HANDLER.rows(models(), N));
    rows.add(
        Row.withSchema(ModelExamples.EXAMPLE).addValues(9999L, 0L, List.of(1f, 2f, 3f)).build());
    Pipeline p = flink();
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(rows).withRowSchema(ModelExamples.EXAMPLE))
            .apply(Example.BEAM_HANDLER.inference(models()).withFailures());
    PAssert.that(result.output()).satisfies(matchesPlainPython(Example.BEAM_HANDLER, N));
    PAssert.that(result.failures())
        .satisfies(
            failures -> {
              int count = 0;
              for (Row failure : failures) {
                count++;
                assertEquals(9999L, (long) failure.getRow("input").getInt64("id"));
                assertEquals("inference", failure.getString(RunInference.STAGE_FIELD));
                assertThat(
                    failure.getString(RunInference.ERROR_MESSAGE_FIELD),
                    containsString("64 features"));
              }
              assertEquals(1, count);
              return null;
            });
    InferenceMetrics metrics = run(p);
    // A Beam ModelHandler takes a list of records, not tensors: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
    assertEquals(N + 1, metrics.inferences());
  }

  /**
   * A Hugging Face text classifier (a tiny BERT and its tokenizer, trained in set-up on the VADER
   * lexicon): a STRING in, the label as a STRING and its probability out.
   */
  @Test
  public void aHuggingFaceTextClassifierGivesALabelAndItsProbability() {
    int n = 300;
    Pipeline p = flink();
    PCollection<Row> predictions = rows(p, Example.TEXT, n).apply(Example.TEXT.inference(models()));
    PAssert.that(predictions).satisfies(matchesPlainPython(Example.TEXT, n));
    InferenceMetrics metrics = run(p);
    // A STRING input and a STRING output: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
  }

  /** The same CNN on PNG bytes, decoded in Python by a hook. */
  @Test
  public void pngBytesDecodedInPythonByAHook() {
    Pipeline p = flink();
    PCollection<Row> predictions =
        rows(p, Example.IMAGE_PNG, N).apply(Example.IMAGE_PNG.inference(models()));
    PAssert.that(predictions).satisfies(matchesPlainPython(Example.IMAGE_PNG, N));
    InferenceMetrics metrics = run(p);
    // A hook takes and gives single records: rows one by one.
    assertEquals(metrics.toString(), 0, metrics.counter(PACKED_RECORDS));
  }

  /**
   * What {@code ./xinfer demo --model digits-two-input} runs: the example's pipeline from its data
   * file to JSON lines, and the summary that compares them with plain Python.
   */
  @Test
  public void theDemoRunsAnExampleFromItsDataFileAndComparesWithPlainPython() throws IOException {
    Path out = Files.createTempDirectory("xinfer-model-example-");
    String summary =
        ModelExamples.run(
            new String[] {
              "--runner=FlinkRunner",
              "--flinkMaster=[local]",
              "--parallelism=1",
              "--example=digits-two-input",
              "--modelsDir=" + models(),
              "--output=" + out.resolve("two-input"),
              "--records=" + N,
              "--xinferPython=" + System.getProperty("xinfer.python")
            });
    assertThat(
        summary,
        containsString(
            "records=" + N + " predictions=" + N + " failed=0 matching_plain_python=" + N + " "));
    assertThat(summary, containsString("model=digits-two-input"));
  }
}
