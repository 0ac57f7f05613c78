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

  private static final Schema SHAPED =
      Schema.builder()
          .addInt64Field("id")
          .addArrayField("pixels", FieldType.FLOAT)
          .addInt64Field("inked")
          .addStringField("text")
          .addArrayField("grid", FieldType.array(FieldType.DOUBLE))
          .addRowField("meta", Schema.builder().addStringField("source").build())
          .build();

  @Test
  public void namedInputsAndDeclaredOutputsReachPythonInOrder() {
    RunInference inference =
        RunInference.withModel("/m")
            .withInput("pixels", "pixels")
            .withInput("ink", "inked")
            .withInputShape("pixels", 8, 8, 1)
            .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
            .withOutput("digit", FieldType.INT64)
            .withOutput("boxes", FieldType.array(FieldType.array(FieldType.DOUBLE)))
            .withOutput("label", FieldType.STRING);
    Map<String, Object> kwargs =
        inference.kwargs(false, false, PipelineOptionsFactory.as(XinferOptions.class));
    assertEquals(
        "[{\"name\":\"pixels\",\"field\":\"pixels\",\"shape\":[8,8,1]},"
            + "{\"name\":\"ink\",\"field\":\"inked\"}]",
        kwargs.get("inputs"));
    assertEquals(
        "[{\"name\":\"probabilities\",\"type\":\"array<float32>\"},"
            + "{\"name\":\"digit\",\"type\":\"int64\"},"
            + "{\"name\":\"boxes\",\"type\":\"array<array<float64>>\"},"
            + "{\"name\":\"label\",\"type\":\"str\"}]",
        kwargs.get("outputs"));
    assertEquals(
        List.of(
            "id",
            "pixels",
            "inked",
            "text",
            "grid",
            "meta",
            "probabilities",
            "digit",
            "boxes",
            "label",
            "model_id"),
        inference.predictionSchema(SHAPED).getFieldNames());
    assertEquals(
        RunInference.outputSchema(SHAPED), RunInference.withModel("/m").predictionSchema(SHAPED));
    RunInference single = RunInference.withModel("/m");
    Map<String, Object> plain =
        single.kwargs(false, false, PipelineOptionsFactory.as(XinferOptions.class));
    assertEquals(false, plain.containsKey("inputs") || plain.containsKey("outputs"));
  }

  @Test
  public void inputAndOutputBuildersNameTheFix() {
    RunInference m = RunInference.withModel("/m");
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> m.withInput("a", "x").withInput("a", "y"))),
        containsString("withInput(\"a\", ...) is given twice"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> m.withFeatureField("pixels").withInput("a", "x"))),
        containsString("withFeatureField(\"pixels\") already names its one input; use one"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> m.withInput("a", "x").withFeatureField("pixels"))),
        containsString("withInput(...) already names the model's inputs [a]"));
    assertThat(
        message(assertThrows(IllegalArgumentException.class, () -> m.withInputShape("a", 8, 0, 1))),
        containsString("each dimension must be positive; got 0"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> m.withOutput("model_id", FieldType.STRING))),
        containsString("every prediction carries model_id already"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> m.withOutput("x", FieldType.iterable(FieldType.FLOAT)))),
        containsString("(use FieldType.array, not iterable)"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> m.withOutput("x", FieldType.FLOAT.withNullable(true)))),
        containsString("an output is never null"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class,
                () -> m.withOutput("x", FieldType.map(FieldType.STRING, FieldType.FLOAT)))),
        containsString("a model output is a number"));
  }

  @Test
  public void inputsAndOutputsAreCheckedAgainstTheInputSchema() {
    RunInference m = RunInference.withModel("/m");
    assertThat(
        expandFails(SHAPED, m.withInput("a", "nope")).getMessage(),
        containsString("withInput(\"a\", \"nope\"): the input has no field 'nope' (fields: [id,"));
    assertThat(
        expandFails(SHAPED, m.withInput("a", "meta")).getMessage(),
        containsString("a model input is a number"));
    assertThat(
        expandFails(SHAPED, m.withInput("a", "pixels").withInputShape("b", 2)).getMessage(),
        containsString("withInputShape(\"b\", ...) names no withInput(...) input (inputs: [a])"));
    assertThat(
        expandFails(SHAPED, m.withInputShape("pixels", 8, 8)).getMessage(),
        containsString("name the input and its field with withInput(\"pixels\", field)"));
    assertThat(
        expandFails(SHAPED, m.withInput("a", "pixels").withOutput("text", FieldType.STRING))
            .getMessage(),
        containsString("already has a field 'text'"));
    assertThat(
        expandFails(
                SHAPED,
                m.withInput("a", "pixels").withPreprocess("xinfer.examples.hooks:parse_pixels"))
            .getMessage(),
        containsString("drop withInput(...), or return a dict of the inputs"));
    Schema withScores =
        Schema.builder()
            .addArrayField("features", FieldType.FLOAT)
            .addArrayField("scores", FieldType.FLOAT)
            .build();
    // Declared outputs add no scores field, so an input may have one.
    assertEquals(
        List.of("features", "scores", "y", "model_id"),
        m.withOutput("y", FieldType.DOUBLE).predictionSchema(withScores).getFieldNames());
  }

  @Test
  public void aBeamModelHandlerIsNamedWithItsArguments() {
    Model handler = Model.ofHandler("my_models.handlers:make", Map.of("model_uri", "/m/x.bin"));
    assertEquals(
        "{model_uri=my_models.handlers:make, framework=beam_model_handler, "
            + "model_params={\"model_uri\":\"/m/x.bin\"}}",
        handler.pythonArgs().toString());
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> Model.ofHandler("not a name", Map.of()))),
        containsString("Model.ofHandler(factory, kwargs) needs 'package.module:function'"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> handler.withFramework(Model.Framework.ONNX))),
        containsString("withFramework(...) applies to a model file; Model.ofHandler("));
    assertThat(
        expandFails(
                EXAMPLE, RunInference.withModel(handler).withModelRefresh(Duration.ofSeconds(5)))
            .getMessage(),
        containsString("withModelRefresh(...) watches model files"));
    assertEquals(
        "xgboost",
        Model.of("/m/d.bin").withFramework(Model.Framework.XGBOOST).pythonArgs().get("framework"));
  }

  @Test
  public void keysMappedToEqualModelsShareOneModelInPython() {
    RunInference byKey =
        RunInference.withModelsByKey(
            Map.of(
                "x", Model.of("/m/a.pt"),
                "y", Model.of("/m/a.pt"),
                "z", Model.of("/m/b.pt")));
    assertEquals(
        "[{\"keys\":[\"x\",\"y\"],\"model_uri\":\"/m/a.pt\"},"
            + "{\"keys\":[\"z\"],\"model_uri\":\"/m/b.pt\"}]",
        byKey.kwargs(true, false, PipelineOptionsFactory.as(XinferOptions.class)).get("models"));
  }

  @Test
  public void theDeviceReachesPython() {
    assertEquals("cuda:0", Model.of("/m/net.pt").withDevice("cuda:0").pythonArgs().get("device"));
    assertEquals(null, Model.of("/m/net.pt").pythonArgs().get("device"));
    assertThat(
        message(
            assertThrows(
                IllegalArgumentException.class, () -> Model.of("/m/net.pt").withDevice("gpu"))),
        containsString("withDevice(device) takes cpu, cuda or cuda:N"));
  }
}
