package dev.xinfer;

import static org.apache.beam.sdk.util.Preconditions.checkStateNotNull;

import com.google.auto.value.AutoValue;
import dev.xinfer.runtime.DirectStage;
import dev.xinfer.runtime.PythonServices;
import dev.xinfer.runtime.RunnerBootstrap;
import dev.xinfer.runtime.XinferOptions;
import java.net.URI;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.beam.sdk.extensions.python.PythonExternalTransform;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.Field;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.schemas.Schema.TypeName;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.display.DisplayData;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Runs a Python model (TensorFlow) on each {@link Row} of a {@link PCollection}, from a Java
 * pipeline.
 *
 * <p>The model runs in Python, in a worker pool that xinfer starts, through Beam's cross-language
 * expansion service. Each output Row holds every input field, then {@code scores} ({@code
 * ARRAY<FLOAT>}: the model's output for the record), {@code predicted_class} ({@code INT64}: the
 * index of the highest score) and {@code model_id} ({@code STRING}); see {@link
 * #outputSchema(Schema)}.
 *
 * <pre>{@code
 * PipelineOptions options = PipelineOptionsFactory.fromArgs(args).create(); // --runner=FlinkRunner
 * Pipeline p = Pipeline.create(options);
 * PCollection<Row> examples = ...; // a schema with a field "features" of ARRAY<FLOAT>
 * PCollection<Row> predictions =
 *     examples.apply(
 *         RunInference.withModel("/models/digits-mlp")   // a SavedModel directory or .keras file
 *             .withFeatureField("features")
 *             .withMaxBatchSize(256));
 * p.run().waitUntilFinish();
 * }</pre>
 *
 * <p>Without {@link #withExpansionService}, xinfer starts its Python services itself (see {@link
 * PythonServices}) with the interpreter named by {@code --xinferPython}, {@code $XINFER_PYTHON}, or
 * the nearest {@code .venv/bin/python}. With {@code --runner=FlinkRunner} the pipeline runs on
 * Beam's portable Flink runner; the user's code and flags stay as they are.
 *
 * <p>A record the model cannot take (a feature array of the wrong length, a null, a value that is
 * not a number) fails the run with a message naming the record, the field, the expected shape and
 * what was found.
 */
@AutoValue
public abstract class RunInference extends PTransform<PCollection<Row>, PCollection<Row>> {
  /** The Python transform this expands to: the only name xinfer's expansion service allows. */
  public static final String PYTHON_TRANSFORM = "xinfer.transforms.RowInference";

  public static final String SCORES_FIELD = "scores";
  public static final String PREDICTED_CLASS_FIELD = "predicted_class";
  public static final String MODEL_ID_FIELD = "model_id";

  public static final String DEFAULT_FEATURE_FIELD = "features";
  public static final int DEFAULT_MIN_BATCH_SIZE = 1;
  public static final int DEFAULT_MAX_BATCH_SIZE = 256;

  private static final Set<TypeName> NUMERIC =
      EnumSet.of(
          TypeName.BYTE,
          TypeName.INT16,
          TypeName.INT32,
          TypeName.INT64,
          TypeName.FLOAT,
          TypeName.DOUBLE);
  private static final Duration REACHABLE_TIMEOUT = Duration.ofSeconds(15);

  abstract String getModelUri();

  abstract String getFeatureField();

  abstract @Nullable String getModelId();

  abstract int getMinBatchSize();

  abstract int getMaxBatchSize();

  abstract @Nullable String getExpansionService();

  abstract Builder toBuilder();

  @AutoValue.Builder
  abstract static class Builder {
    abstract Builder setModelUri(String value);

    abstract Builder setFeatureField(String value);

    abstract Builder setModelId(@Nullable String value);

    abstract Builder setMinBatchSize(int value);

    abstract Builder setMaxBatchSize(int value);

    abstract Builder setExpansionService(@Nullable String value);

    abstract RunInference build();
  }

  /**
   * Inference with the model at {@code modelUri}: a TensorFlow SavedModel directory or {@code
   * .keras} file. A relative path is resolved against the working directory.
   */
  public static RunInference withModel(String modelUri) {
    checkArgument(
        modelUri != null && !modelUri.trim().isEmpty(),
        "withModel(modelUri) needs the path of a SavedModel directory or .keras file");
    return new AutoValue_RunInference.Builder()
        .setModelUri(absolute(modelUri))
        .setFeatureField(DEFAULT_FEATURE_FIELD)
        .setMinBatchSize(DEFAULT_MIN_BATCH_SIZE)
        .setMaxBatchSize(DEFAULT_MAX_BATCH_SIZE)
        .build();
  }

  /** The input field holding the model input, an array of numbers. Default {@code features}. */
  public RunInference withFeatureField(String fieldName) {
    checkArgument(
        fieldName != null && !fieldName.isEmpty(),
        "withFeatureField(fieldName) needs the name of the input's array-of-numbers field");
    return toBuilder().setFeatureField(fieldName).build();
  }

  /** The id each output carries in {@code model_id}. Default: the model's file name. */
  public RunInference withModelId(String modelId) {
    checkArgument(
        modelId != null && !modelId.isEmpty(), "withModelId(modelId) needs a non-empty id");
    return toBuilder().setModelId(modelId).build();
  }

  /** The smallest batch Beam's batching forms when it can (default 1). */
  public RunInference withMinBatchSize(int minBatchSize) {
    checkArgument(
        minBatchSize >= 1, "withMinBatchSize(%s) needs a size of at least 1", minBatchSize);
    return toBuilder().setMinBatchSize(minBatchSize).build();
  }

  /** The largest batch handed to the model at once (default 256). */
  public RunInference withMaxBatchSize(int maxBatchSize) {
    checkArgument(
        maxBatchSize >= 1, "withMaxBatchSize(%s) needs a size of at least 1", maxBatchSize);
    return toBuilder().setMaxBatchSize(maxBatchSize).build();
  }

  /**
   * Uses the xinfer expansion service already running at {@code hostPort} (e.g. {@code
   * 127.0.0.1:8097}, started with {@code xinfer-expansion-service --port 8097}) instead of starting
   * one.
   */
  public RunInference withExpansionService(String hostPort) {
    checkArgument(
        hostPort != null && hostPort.lastIndexOf(':') > 0,
        "withExpansionService(hostPort) needs HOST:PORT, e.g. 127.0.0.1:8097; got %s",
        hostPort);
    return toBuilder().setExpansionService(hostPort).build();
  }

  /** The output schema for an input schema: the input fields, then the inference fields. */
  public static Schema outputSchema(Schema inputSchema) {
    return Schema.builder()
        .addFields(inputSchema.getFields())
        .addField(SCORES_FIELD, FieldType.array(FieldType.FLOAT))
        .addField(PREDICTED_CLASS_FIELD, FieldType.INT64)
        .addField(MODEL_ID_FIELD, FieldType.STRING)
        .build();
  }

  @Override
  public PCollection<Row> expand(PCollection<Row> input) {
    checkArgument(
        getMinBatchSize() <= getMaxBatchSize(),
        "withMinBatchSize(%s) is larger than withMaxBatchSize(%s); make the minimum the smaller",
        getMinBatchSize(),
        getMaxBatchSize());
    checkArgument(
        input.hasSchema(),
        "RunInference needs a PCollection<Row> with a schema: call setRowSchema(schema) on %s",
        input.getName());
    Schema inputSchema = input.getSchema();
    checkInputSchema(inputSchema, getFeatureField());
    Schema expected = outputSchema(inputSchema);

    PipelineOptions options = input.getPipeline().getOptions();
    RunnerBootstrap.prepare(options);
    String address = getExpansionService();
    if (address == null) {
      address = PythonServices.shared(options.as(XinferOptions.class)).expansionServiceAddress();
    } else {
      PythonServices.checkReachable(address, REACHABLE_TIMEOUT);
    }

    PythonExternalTransform<PCollection<Row>, PCollection<Row>> python =
        PythonExternalTransform.<PCollection<Row>, PCollection<Row>>from(PYTHON_TRANSFORM, address)
            .withKwargs(kwargs());
    if (RunnerBootstrap.runsPythonStageInDoFn(options)) {
      return DirectStage.apply(
          input, "Python", python, expected, options.getRunner().getSimpleName());
    }
    PCollection<Row> output = input.apply("Python", python);
    checkStateNotNull(output.getSchema(), "the Python transform returned no schema");
    if (!sameFields(output.getSchema(), expected)) {
      throw new IllegalStateException(
          String.format(
              "The Python side of RunInference returned rows of schema %s, but this Java "
                  + "version expects %s. The Java and Python halves of xinfer are from different "
                  + "versions: re-run ./xinfer setup (or reinstall ./python-expansion).",
              output.getSchema(), expected));
    }
    return output.setRowSchema(expected);
  }

  private Map<String, Object> kwargs() {
    Map<String, Object> kwargs = new LinkedHashMap<>();
    kwargs.put("model_uri", getModelUri());
    kwargs.put("feature_field", getFeatureField());
    kwargs.put("framework", "tensorflow");
    if (getModelId() != null) {
      kwargs.put("model_id", getModelId());
    }
    kwargs.put("min_batch_size", getMinBatchSize());
    kwargs.put("max_batch_size", getMaxBatchSize());
    return kwargs;
  }

  static void checkInputSchema(Schema schema, String featureField) {
    checkArgument(
        schema.hasField(featureField),
        "The input has no field '%s' (fields: %s); name the model input's field with "
            + "withFeatureField(...)",
        featureField,
        schema.getFieldNames());
    FieldType type = schema.getField(featureField).getType();
    boolean numericArray =
        type.getTypeName().isCollectionType()
            && type.getCollectionElementType() != null
            && NUMERIC.contains(type.getCollectionElementType().getTypeName());
    checkArgument(
        numericArray,
        "Field '%s' is %s; RunInference needs an array of numbers there "
            + "(FieldType.array(FieldType.FLOAT), or DOUBLE, INT32, INT64). Convert it before "
            + "RunInference or name another field with withFeatureField(...)",
        featureField,
        type);
    for (String name : new String[] {SCORES_FIELD, PREDICTED_CLASS_FIELD, MODEL_ID_FIELD}) {
      checkArgument(
          !schema.hasField(name),
          "The input already has a field '%s', which RunInference adds to its output; rename "
              + "or drop it before RunInference",
          name);
    }
  }

  private static boolean sameFields(Schema actual, Schema expected) {
    return names(actual).equals(names(expected))
        && actual.getFields().stream()
            .allMatch(
                f ->
                    f.getType()
                        .withNullable(false)
                        .equivalent(
                            expected.getField(f.getName()).getType().withNullable(false),
                            Schema.EquivalenceNullablePolicy.IGNORE));
  }

  private static String names(Schema schema) {
    return schema.getFields().stream().map(Field::getName).collect(Collectors.joining(","));
  }

  private static String absolute(String modelUri) {
    String trimmed = modelUri.trim();
    if (trimmed.startsWith("file:")) {
      return Paths.get(URI.create(trimmed)).toString();
    }
    if (trimmed.contains("://")) {
      return trimmed;
    }
    return Paths.get(trimmed).toAbsolutePath().normalize().toString();
  }

  private static void checkArgument(boolean ok, String message, Object... args) {
    if (!ok) {
      throw new IllegalArgumentException(String.format(message, args));
    }
  }

  @Override
  public void populateDisplayData(DisplayData.Builder builder) {
    super.populateDisplayData(builder);
    builder
        .add(DisplayData.item("modelUri", getModelUri()))
        .add(DisplayData.item("featureField", getFeatureField()))
        .addIfNotNull(DisplayData.item("modelId", getModelId()))
        .add(DisplayData.item("minBatchSize", getMinBatchSize()))
        .add(DisplayData.item("maxBatchSize", getMaxBatchSize()))
        .addIfNotNull(DisplayData.item("expansionService", getExpansionService()));
  }
}
