package dev.xinfer;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Failures;
import dev.xinfer.testing.Stalls;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.testing.TestPipeline;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.Filter;
import org.apache.beam.sdk.transforms.Flatten;
import org.apache.beam.sdk.transforms.Keys;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.Values;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionList;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * A user's test class as users write them: twenty {@code TestPipeline} tests of pipelines that hold
 * RunInference, on Beam's DirectRunner with its default test options (no runner flag). Its time is
 * the figure of the README's "Unit-testing your pipelines" (the first test starts the Python
 * services and the SDK worker; the others reuse them). Real Python services, real TensorFlow model.
 */
@RunWith(JUnit4.class)
public class DirectRunnerTestClassIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(4);

  @Rule public final transient TestPipeline p = TestPipeline.create();

  private PCollection<Row> examples(int n) {
    return p.apply(Create.of(Digits.exampleRows(n)).withRowSchema(Digits.EXAMPLE_SCHEMA));
  }

  private static RunInference model() {
    return RunInference.withModel(Digits.model().toString());
  }

  private static Row badRecord(long id) {
    return Row.withSchema(Digits.EXAMPLE_SCHEMA)
        .addValues(id, 1L, Collections.nCopies(10, 0.5f))
        .build();
  }

  private PipelineResult runs() {
    PipelineResult result = p.run();
    assertEquals(PipelineResult.State.DONE, result.waitUntilFinish());
    return result;
  }

  private void predictsInBatchesOf(int records, int batch) {
    PAssert.that(examples(records).apply(model().withMaxBatchSize(batch)))
        .satisfies(Digits.matchesReference(records));
    runs();
  }

  @Test
  public void batchesOfOne() {
    predictsInBatchesOf(10, 1);
  }

  @Test
  public void batchesOfEight() {
    predictsInBatchesOf(50, 8);
  }

  @Test
  public void batchesOfSixtyFour() {
    predictsInBatchesOf(200, 64);
  }

  @Test
  public void theDefaultBatchSize() {
    PAssert.that(examples(100).apply(model())).satisfies(Digits.matchesReference(100));
    runs();
  }

  @Test
  public void manyBundlesOfSmallBatches() {
    predictsInBatchesOf(500, 32);
  }

  @Test
  public void anEmptyInputPredictsNothing() {
    PCollection<Row> none =
        p.apply(
            Create.empty(RowCoder.of(Digits.EXAMPLE_SCHEMA)).withRowSchema(Digits.EXAMPLE_SCHEMA));
    PAssert.that(none.apply(model())).empty();
    runs();
  }

  @Test
  public void aSingleRecord() {
    PAssert.that(examples(1).apply(model())).satisfies(Digits.matchesReference(1));
    runs();
  }

  @Test
  public void theOutputHasRunInferencesOutputSchema() {
    PCollection<Row> predictions = examples(5).apply(model());
    assertEquals(RunInference.outputSchema(Digits.EXAMPLE_SCHEMA), predictions.getSchema());
    PAssert.that(predictions).satisfies(Digits.matchesReference(5));
    runs();
  }

  @Test
  public void everyPredictionNamesTheModelId() {
    PAssert.that(
            examples(20)
                .apply(RunInference.withModel(Model.of(Digits.model().toString()).withId("v7"))))
        .satisfies(Digits.matchesReference(20, Digits.MODEL_NAME, "v7", false));
    runs();
  }

  @Test
  public void aBadRecordGoesToTheFailuresWithItsReason() {
    List<Row> rows = new ArrayList<>(Digits.exampleRows(10));
    rows.add(badRecord(4242L));
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(rows).withRowSchema(Digits.EXAMPLE_SCHEMA)).apply(model().withFailures());
    PAssert.that(result.output()).satisfies(Digits.matchesReference(10));
    PAssert.that(result.failures())
        .satisfies(Failures.exactlyOne(4242L, null, "conversion", "RecordError", "has 10 values"));
    runs();
  }

  @Test
  public void recordsInEqualPredictionsPlusFailures() {
    List<Row> rows = new ArrayList<>(Digits.exampleRows(30));
    rows.add(badRecord(5001L));
    rows.add(badRecord(5002L));
    WithFailures.Result<PCollection<Row>, Row> result =
        p.apply(Create.of(rows).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(model().withMaxBatchSize(8).withFailures());
    PAssert.thatSingleton(result.output().apply("predicted", Count.globally())).isEqualTo(30L);
    PAssert.thatSingleton(result.failures().apply("failed", Count.globally())).isEqualTo(2L);
    InferenceMetrics metrics = InferenceMetrics.of(runs());
    assertEquals(30, metrics.predictions());
    assertEquals(2, metrics.failures());
  }

  @Test
  public void aPythonFailureFailsThePipelineWithThePythonMessage() {
    List<Row> rows = new ArrayList<>(Digits.exampleRows(3));
    rows.add(badRecord(4343L));
    p.apply(Create.of(rows).withRowSchema(Digits.EXAMPLE_SCHEMA)).apply(model());
    RuntimeException e = assertThrows(RuntimeException.class, () -> p.run().waitUntilFinish());
    assertThat(
        e.getMessage(),
        containsString("record {id=4343, label=1}: field 'features' has 10 values"));
  }

  @Test
  public void twoModelsInOnePipeline() {
    PCollection<Row> rows = examples(40);
    PAssert.that(
            rows.apply(
                "first", RunInference.withModel(Model.of(Digits.model().toString()).withId("a"))))
        .satisfies(Digits.matchesReference(40, Digits.MODEL_NAME, "a", false));
    PAssert.that(
            rows.apply(
                "second",
                RunInference.withModel(Model.of(Digits.model().toString()).withId("b"))
                    .withMaxBatchSize(4)))
        .satisfies(Digits.matchesReference(40, Digits.MODEL_NAME, "b", false));
    runs();
  }

  @Test
  public void keyedPredictionsKeepTheirKeys() {
    List<KV<String, Row>> keyed = new ArrayList<>();
    for (Row row : Digits.exampleRows(20)) {
      keyed.add(KV.of(row.getInt64("id") < 5 ? "first" : "rest", row));
    }
    PCollection<KV<String, Row>> predictions =
        p.apply(
                Create.of(keyed)
                    .withCoder(
                        KvCoder.of(StringUtf8Coder.of(), RowCoder.of(Digits.EXAMPLE_SCHEMA))))
            .apply(model().keyed());
    PAssert.that(predictions.apply(Values.create())).satisfies(Digits.matchesReference(20));
    PAssert.that(
            predictions
                .apply(Filter.by(kv -> kv.getKey().equals("first")))
                .apply(Keys.create())
                .apply(Count.globally()))
        .containsInAnyOrder(5L);
    runs();
  }

  @Test
  public void aKeyedFailureCarriesItsKey() {
    List<KV<String, Row>> keyed = new ArrayList<>();
    for (Row row : Digits.exampleRows(8)) {
      keyed.add(KV.of("good", row));
    }
    keyed.add(KV.of("bad", badRecord(6006L)));
    WithFailures.Result<PCollection<KV<String, Row>>, Row> result =
        p.apply(
                Create.of(keyed)
                    .withCoder(
                        KvCoder.of(StringUtf8Coder.of(), RowCoder.of(Digits.EXAMPLE_SCHEMA))))
            .apply(model().keyed().withFailures());
    PAssert.that(result.output().apply(Values.create())).satisfies(Digits.matchesReference(8));
    PAssert.that(result.failures())
        .satisfies(Failures.exactlyOne(6006L, "bad", "conversion", "RecordError", "has 10 values"));
    runs();
  }

  @Test
  public void theInputOfTwoSourcesFlattened() {
    List<Row> rows = Digits.exampleRows(30);
    PCollection<Row> first =
        p.apply("first", Create.of(rows.subList(0, 12)).withRowSchema(Digits.EXAMPLE_SCHEMA));
    PCollection<Row> second =
        p.apply("second", Create.of(rows.subList(12, 30)).withRowSchema(Digits.EXAMPLE_SCHEMA));
    PAssert.that(PCollectionList.of(first).and(second).apply(Flatten.pCollections()).apply(model()))
        .satisfies(Digits.matchesReference(30));
    runs();
  }

  @Test
  public void predictionsFeedAJavaAggregation() {
    PCollection<Long> perClass =
        examples(100)
            .apply(model())
            .apply(
                MapElements.into(TypeDescriptors.longs())
                    .via(row -> row.getInt64("predicted_class")))
            .apply(Count.perElement())
            .apply(Values.create());
    PAssert.that(perClass)
        .satisfies(
            counts -> {
              long total = 0;
              int classes = 0;
              for (long count : counts) {
                total += count;
                classes++;
              }
              assertEquals("every record counted once", 100, total);
              assertEquals("the ten digits", 10, classes);
              return null;
            });
    runs();
  }

  @Test
  public void theMetricsCountTheRun() {
    examples(64).apply(model().withMaxBatchSize(16));
    InferenceMetrics metrics = InferenceMetrics.of(runs());
    assertEquals(64, metrics.inferences());
    assertEquals(64, metrics.predictions());
    assertEquals(0, metrics.failures());
    // At most 16 a batch; the DirectRunner's bundles may split them further.
    assertTrue(metrics.batches() >= 4);
    assertTrue(String.valueOf(metrics.meanBatchSize()), metrics.meanBatchSize() <= 16);
  }

  @Test
  public void theSameRecordsTwiceGiveTheSamePredictions() {
    PCollection<Row> rows = examples(25);
    PCollection<KV<Long, Long>> once = classes(rows.apply("once", model()), "once");
    PCollection<KV<Long, Long>> twice =
        classes(rows.apply("twice", model().withMaxBatchSize(3)), "twice");
    PAssert.that(once).satisfies(referenceClasses(25));
    PAssert.that(twice).satisfies(referenceClasses(25));
    runs();
  }

  @Test
  public void aFeatureFieldOfAnotherName() {
    org.apache.beam.sdk.schemas.Schema renamed =
        org.apache.beam.sdk.schemas.Schema.builder()
            .addInt64Field("id")
            .addInt64Field("label")
            .addArrayField("pixels", org.apache.beam.sdk.schemas.Schema.FieldType.FLOAT)
            .build();
    List<Row> rows = new ArrayList<>();
    for (Row row : Digits.exampleRows(15)) {
      rows.add(Row.withSchema(renamed).addValues(row.getValues().toArray()).build());
    }
    PAssert.that(
            p.apply(Create.of(rows).withRowSchema(renamed))
                .apply(model().withFeatureField("pixels")))
        .satisfies(Digits.matchesReference(15));
    runs();
  }

  /** Each of ids {@code 0..n-1} once, with the class the model computes in plain Python. */
  private static org.apache.beam.sdk.transforms.SerializableFunction<Iterable<KV<Long, Long>>, Void>
      referenceClasses(int n) {
    java.util.HashMap<Long, Digits.Expected> reference = Digits.reference();
    return classes -> {
      java.util.Set<Long> ids = new java.util.TreeSet<>();
      for (KV<Long, Long> idClass : classes) {
        assertEquals(
            "id " + idClass.getKey(),
            reference.get(idClass.getKey()).predictedClass,
            (long) idClass.getValue());
        assertEquals("id " + idClass.getKey() + " once", true, ids.add(idClass.getKey()));
      }
      assertEquals(n, ids.size());
      return null;
    };
  }

  private static PCollection<KV<Long, Long>> classes(PCollection<Row> predictions, String name) {
    return predictions.apply(
        name + " classes",
        MapElements.into(TypeDescriptors.kvs(TypeDescriptors.longs(), TypeDescriptors.longs()))
            .via(row -> KV.of(row.getInt64("id"), row.getInt64("predicted_class"))));
  }
}
