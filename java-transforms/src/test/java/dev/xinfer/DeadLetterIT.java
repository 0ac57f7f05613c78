package dev.xinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Failures;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The dead-letter output, keyed inference and metrics, end to end on the embedded portable Flink
 * runner with the real Python services and models.
 */
@RunWith(JUnit4.class)
public class DeadLetterIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(4);

  private static final int GOOD = 200;
  private static final Schema NULLABLE =
      Schema.builder()
          .addInt64Field("id")
          .addInt64Field("label")
          .addNullableField("features", FieldType.array(FieldType.FLOAT))
          .build();

  private static Pipeline flink() {
    return TestRunners.pipeline("FlinkRunner", "--parallelism=1");
  }

  private static Row row(long id, List<Float> features) {
    return Row.withSchema(NULLABLE).addValues(id, 0L, features).build();
  }

  private static List<Float> pixels(int n, float value) {
    return new ArrayList<>(Collections.nCopies(n, value));
  }

  private static List<Float> withOne(float value) {
    List<Float> features = pixels(64, 1f);
    features.set(10, value);
    return features;
  }

  /** The good examples, in the nullable schema. */
  private static List<Row> goodRows() {
    List<Row> rows = new ArrayList<>();
    for (Row r : Digits.exampleRows(GOOD)) {
      rows.add(
          Row.withSchema(NULLABLE)
              .addValues(r.getInt64("id"), r.getInt64("label"), r.getArray("features"))
              .build());
    }
    return rows;
  }

  /** Malformed records by id, each with the words its failure message must hold. */
  private static final Map<Long, String> CORPUS = new HashMap<>();

  static {
    CORPUS.put(9001L, "has 63 values; the model input (None, 64) needs 64 per record");
    CORPUS.put(9002L, "has 65 values");
    CORPUS.put(9003L, "is null; the model expects an array of shape (None, 64)");
    CORPUS.put(9004L, "has 0 values");
    CORPUS.put(9005L, "[10] is nan (1 non-finite value(s)); the NaN policy is reject");
    CORPUS.put(9006L, "[10] is inf (1 non-finite value(s))");
    CORPUS.put(9007L, "[10] is -inf");
    CORPUS.put(9008L, "[0] is nan (64 non-finite value(s))");
  }

  private static List<Row> corpus() {
    return List.of(
        row(9001L, pixels(63, 1f)),
        row(9002L, pixels(65, 1f)),
        row(9003L, null),
        row(9004L, pixels(0, 1f)),
        row(9005L, withOne(Float.NaN)),
        row(9006L, withOne(Float.POSITIVE_INFINITY)),
        row(9007L, withOne(Float.NEGATIVE_INFINITY)),
        row(9008L, pixels(64, Float.NaN)));
  }

  @Test
  public void malformedRecordsGoToTheDeadLetterOutputAndCountsReconcile() {
    Pipeline p = flink();
    List<Row> input = new ArrayList<>(goodRows());
    // Bad records in the middle of batches: the rest of each batch still gets predictions.
    List<Row> bad = corpus();
    for (int i = 0; i < bad.size(); i++) {
      input.add(i * 20, bad.get(i));
    }
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(input).withRowSchema(NULLABLE))
            .apply(
                RunInference.withModel(Digits.model("digits-mlp"))
                    .withMaxBatchSize(32)
                    .withFailures());
    assertEquals(RunInference.failureSchema(NULLABLE), result.failures().getSchema());
    PAssert.that(result.output())
        .satisfies(
            predictions -> {
              Map<Long, Digits.Expected> reference = Digits.reference();
              int n = 0;
              for (Row prediction : predictions) {
                Digits.assertMatches(reference.get(prediction.getInt64("id")), prediction, false);
                n++;
              }
              assertEquals(GOOD, n);
              return null;
            });
    PAssert.that(result.failures())
        .satisfies(
            failures -> {
              Map<Long, Row> byId = new HashMap<>();
              for (Row failure : failures) {
                byId.put(failure.getRow("input").getInt64("id"), failure);
              }
              assertEquals(CORPUS.keySet(), byId.keySet());
              CORPUS.forEach(
                  (id, words) -> {
                    Row failure = byId.get(id);
                    String message = failure.getString("error_message");
                    assertTrue(id + ": " + message, message.contains(words));
                    assertTrue(id + ": " + message, message.contains("id=" + id));
                    assertEquals("conversion", failure.getString("stage"));
                    assertEquals("RecordError", failure.getString("error_type"));
                    assertEquals("digits-mlp", failure.getString("model_id"));
                    assertNull(failure.getString("key"));
                  });
              // The original input is kept whole.
              assertEquals(63, byId.get(9001L).getRow("input").getArray("features").size());
              assertNull(byId.get(9003L).getRow("input").getArray("features"));
              return null;
            });
    PAssert.thatSingleton(result.output().apply("CountOut", Count.globally()))
        .isEqualTo((long) GOOD);
    PAssert.thatSingleton(result.failures().apply("CountFailed", Count.globally()))
        .isEqualTo((long) CORPUS.size());

    PipelineResult run = p.run();
    run.waitUntilFinish();
    InferenceMetrics metrics = InferenceMetrics.of(run);
    assertEquals(metrics.toString(), GOOD, metrics.predictions());
    assertEquals(metrics.toString(), CORPUS.size(), metrics.failures());
    assertEquals(metrics.toString(), input.size(), metrics.predictions() + metrics.failures());
    assertEquals(
        metrics.toString(), Map.of("conversion", (long) CORPUS.size()), metrics.failuresByStage());
    assertEquals(metrics.toString(), input.size(), metrics.inferences());
    assertTrue(metrics.toString(), metrics.batches() >= input.size() / 32);
    assertTrue(metrics.toString(), metrics.meanBatchLatencyMillis() > 0);
    assertTrue(metrics.toString(), metrics.maxModelLoadMillis() > 0);
  }

  /**
   * Failures in the other stages: a record PyTorch rejects (inference; TorchScript files do not
   * record their input size), a record whose text the preprocess hook cannot parse (preprocessing).
   */
  @Test
  public void inferenceAndPreprocessingFailuresKeepTheirStage() {
    Pipeline p = flink();
    List<Row> input = new ArrayList<>(goodRows().subList(0, 50));
    input.add(25, row(9101L, pixels(63, 1f)));
    WithFailures.Result<PCollection<Row>, Row> torch =
        p.apply("Torch", Create.of(input).withRowSchema(NULLABLE))
            .apply(
                "TorchInference",
                RunInference.withModel(Digits.model("digits-torch.pt")).withFailures());
    PAssert.that(torch.failures())
        .satisfies(Failures.exactlyOne(9101L, null, "inference", "RuntimeError", "1x63 and 64x32"));
    PAssert.thatSingleton(torch.output().apply("CountTorch", Count.globally())).isEqualTo(50L);

    Schema text = Schema.builder().addInt64Field("id").addStringField("pixels").build();
    WithFailures.Result<PCollection<Row>, Row> parsed =
        p.apply(
                "Text",
                Create.of(
                        Row.withSchema(text)
                            .addValues(1L, String.join(" ", Collections.nCopies(64, "3")))
                            .build(),
                        Row.withSchema(text).addValues(2L, "3 3 three").build())
                    .withRowSchema(text))
            .apply(
                "Parsed",
                RunInference.withModel(Digits.model("digits-mlp"))
                    .withPreprocess("xinfer.examples.hooks:parse_pixels")
                    .withFailures());
    PAssert.that(parsed.failures())
        .satisfies(Failures.exactlyOne(2L, null, "preprocessing", "ValueError", "three"));
    PAssert.thatSingleton(parsed.output().apply("CountParsed", Count.globally())).isEqualTo(1L);
    p.run().waitUntilFinish();
  }

  /** Two models in one transform, chosen per key, at most one in memory; unknown keys fail. */
  @Test
  public void keyedInferenceWithTwoModels() {
    Pipeline p = flink();
    List<KV<String, Row>> keyed = new ArrayList<>();
    for (Row r : Digits.exampleRows(GOOD)) {
      keyed.add(KV.of(r.getInt64("id") % 2 == 0 ? "tf" : "sk", r));
    }
    keyed.add(KV.of("nobody", Digits.exampleRows(1).get(0)));
    WithFailures.Result<PCollection<KV<String, Row>>, Row> result =
        p.apply(
                Create.of(keyed)
                    .withCoder(
                        KvCoder.of(StringUtf8Coder.of(), RowCoder.of(Digits.EXAMPLE_SCHEMA))))
            .apply(
                RunInference.withModelsByKey(
                        Map.of(
                            "tf", Model.of(Digits.model("digits-mlp")),
                            "sk", Model.of(Digits.model("digits-sklearn.joblib"))))
                    .withMaxModelsInMemory(1)
                    .withMaxBatchSize(16)
                    .keyed()
                    .withFailures());
    PAssert.that(result.output())
        .satisfies(
            predictions -> {
              Map<Long, Digits.Expected> tf = Digits.reference("digits-mlp");
              Map<Long, Digits.Expected> sk = Digits.reference("digits-sklearn.joblib");
              int n = 0;
              for (KV<String, Row> kv : predictions) {
                Row prediction = kv.getValue();
                long id = prediction.getInt64("id");
                boolean isTf = kv.getKey().equals("tf");
                assertEquals(id % 2 == 0, isTf);
                assertEquals(
                    isTf ? "digits-mlp" : "digits-sklearn.joblib",
                    prediction.getString("model_id"));
                Digits.assertMatches((isTf ? tf : sk).get(id), prediction, false);
                n++;
              }
              assertEquals(GOOD, n);
              return null;
            });
    PAssert.that(result.failures())
        .satisfies(
            Failures.exactlyOne(0L, "nobody", "routing", "KeyError", "key 'nobody' has no model"));
    p.run().waitUntilFinish();
  }
}
