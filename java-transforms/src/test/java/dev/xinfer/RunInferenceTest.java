package dev.xinfer;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.not;
import static org.hamcrest.Matchers.sameInstance;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.display.DisplayData;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** Builder validation and construction-time checks: no Python, no runner. */
@RunWith(JUnit4.class)
public class RunInferenceTest {
  private static final Schema EXAMPLE =
      Schema.builder().addInt64Field("id").addArrayField("features", FieldType.FLOAT).build();

  private static String message(Throwable t) {
    return t.getMessage();
  }

  @Test
  public void withXReturnsANewTransformAndLeavesTheOriginal() {
    RunInference base = RunInference.withModel("/models/m");
    RunInference tuned = base.withMaxBatchSize(32).withFeatureField("pixels");
    assertThat(tuned, not(sameInstance(base)));
    assertEquals(RunInference.DEFAULT_MAX_BATCH_SIZE, base.getMaxBatchSize());
    assertEquals("features", base.getFeatureField());
    assertEquals(32, tuned.getMaxBatchSize());
    assertEquals("pixels", tuned.getFeatureField());
  }

  @Test
  public void relativeModelPathsBecomeAbsolute() {
    assertEquals(
        Paths.get("models/m").toAbsolutePath().toString(),
        RunInference.withModel("models/m").getModel().getUri());
    assertEquals("/m", Model.of("file:///m").getUri());
    assertEquals("gs://b/m", Model.of("gs://b/m").getUri());
  }

  @Test
  public void buildersNameTheMethodToFix() {
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> RunInference.withModel(" "))),
        containsString("withModel(modelUri) needs the path"));
    RunInference r = RunInference.withModel("/m");
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> r.withFeatureField(""))),
        containsString("withFeatureField(fieldName)"));
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> r.withMinBatchSize(0))),
        containsString("withMinBatchSize(0) needs a size of at least 1"));
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> r.withMaxBatchSize(-3))),
        containsString("withMaxBatchSize(-3)"));
    assertThat(
        message(
            assertThrows(IllegalArgumentException.class, () -> r.withExpansionService("x", "f"))),
        containsString("withExpansionService(hostPort, secretFile) needs HOST:PORT"));
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> Model.of("/m").withId(""))),
        containsString("withId(id) needs a non-empty id"));
  }

  @Test
  public void outputSchemaIsInputThenInferenceFields() {
    Schema out = RunInference.outputSchema(EXAMPLE);
    assertEquals(
        List.of("id", "features", "scores", "predicted_class", "model_id"), out.getFieldNames());
    assertEquals(FieldType.array(FieldType.FLOAT), out.getField("scores").getType());
    assertEquals(FieldType.INT64, out.getField("predicted_class").getType());
    assertEquals(FieldType.STRING, out.getField("model_id").getType());
  }

  private static IllegalArgumentException expandFails(Schema schema, RunInference transform) {
    Pipeline p = Pipeline.create(PipelineOptionsFactory.create());
    PCollection<Row> rows = p.apply(Create.empty(schema));
    return assertThrows(IllegalArgumentException.class, () -> rows.apply(transform));
  }

  @Test
  public void missingFeatureFieldListsTheFields() {
    IllegalArgumentException e =
        expandFails(EXAMPLE, RunInference.withModel("/m").withFeatureField("pixels"));
    assertThat(e.getMessage(), containsString("no field 'pixels' (fields: [id, features])"));
    assertThat(e.getMessage(), containsString("withFeatureField"));
  }

  @Test
  public void nonNumericFeatureFieldIsRejected() {
    Schema text = Schema.builder().addArrayField("features", FieldType.STRING).build();
    assertThat(
        expandFails(text, RunInference.withModel("/m")).getMessage(),
        containsString("Field 'features' is ARRAY<STRING NOT NULL> NOT NULL; RunInference needs"));
    Schema scalar = Schema.builder().addDoubleField("features").build();
    assertThat(
        expandFails(scalar, RunInference.withModel("/m")).getMessage(),
        containsString("needs an array of numbers"));
  }

  @Test
  public void inputFieldsThatTheOutputAddsAreRejected() {
    Schema clash =
        Schema.builder()
            .addArrayField("features", FieldType.FLOAT)
            .addStringField("model_id")
            .build();
    assertThat(
        expandFails(clash, RunInference.withModel("/m")).getMessage(),
        containsString("already has a field 'model_id'"));
  }

  @Test
  public void minBatchLargerThanMaxIsRejected() {
    assertThat(
        expandFails(EXAMPLE, RunInference.withModel("/m").withMinBatchSize(10).withMaxBatchSize(5))
            .getMessage(),
        containsString("withMinBatchSize(10) is larger than withMaxBatchSize(5)"));
  }

  @Test
  public void displayDataShowsTheConfiguration() {
    DisplayData data =
        DisplayData.from(
            RunInference.withModel("/m")
                .withMaxBatchSize(8)
                .withPreprocess("my.hooks:parse")
                .withModelRefresh(Duration.ofSeconds(30)));
    assertThat(data.toString(), containsString("model=/m"));
    assertThat(data.toString(), containsString("maxBatchSize=8"));
    assertThat(data.toString(), containsString("preprocess=my.hooks:parse"));
    assertThat(data.toString(), containsString("modelRefresh=PT30S"));
  }

  @Test
  public void newSettingsNameTheMethodToFix() {
    RunInference r = RunInference.withModel("/m");
    assertThat(
        message(
            assertThrows(IllegalArgumentException.class, () -> r.withMaxBatchWait(Duration.ZERO))),
        containsString("withMaxBatchWait(maxWait) needs a positive duration"));
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> r.withPreprocess("parse"))),
        containsString("withPreprocess(pythonFunction) needs 'package.module:function'"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> Model.of("/m.pt").withModelClass("Net", Map.of()))),
        containsString("needs 'package.module:ClassName'"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> RunInference.withModelsByKey(Map.of()))),
        containsString("withModelsByKey(modelsByKey) needs at least one key"));
  }

  @Test
  public void securitySettingsAreCheckedAtConstruction() {
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> Model.of("/m.pkl").withSha256("ab"))),
        containsString("withSha256(hexDigest) needs the file's SHA-256 as 64 hex digits"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> RunInference.withModel("/m").withPostprocess("my hooks:f"))),
        containsString("a module allowed with --xinferAllowedModules"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> RunInference.withModel("/m").withExpansionService("127.0.0.1:8097", ""))),
        containsString("needs the secret file the service was started with"));
  }

  @Test
  public void modelsByKeyNeedKeyedInput() {
    RunInference byKey = RunInference.withModelsByKey(Map.of("a", Model.of("/m")));
    assertThat(
        expandFails(EXAMPLE, byKey).getMessage(),
        containsString("withModelsByKey(...) chooses a model per key: apply .keyed()"));
  }

  @Test
  public void refreshRefusesAFixedModelId() {
    RunInference refreshing =
        RunInference.withModel(Model.of("/m/v*").withId("x"))
            .withModelRefresh(Duration.ofSeconds(1));
    assertThat(
        expandFails(EXAMPLE, refreshing).getMessage(),
        containsString("remove withId(\"x\") from the Model"));
  }

  @Test
  public void failureSchemaNestsTheInput() {
    Schema failure = RunInference.failureSchema(EXAMPLE);
    assertEquals(EXAMPLE, failure.getField("input").getType().getRowSchema());
    assertEquals(
        List.of("input", "key", "stage", "error_type", "error_message", "model_id"),
        failure.getFieldNames());
  }

  @Test
  public void modelArgumentsForPython() {
    Model m =
        Model.of("/m/net.pt").withModelClass("pkg.nets:Net", Map.of("hidden", 32)).withId("net");
    assertEquals(
        "{model_uri=/m/net.pt, framework=pytorch, model_id=net, model_class=pkg.nets:Net, "
            + "model_params={\"hidden\":32}}",
        m.pythonArgs().toString());
  }
}
