package dev.xinfer;

import static dev.xinfer.Model.checkArgument;
import static dev.xinfer.Model.putIfSet;
import static org.apache.beam.sdk.util.Preconditions.checkStateNotNull;

import com.google.auto.value.AutoValue;
import dev.xinfer.runtime.PythonTransforms;
import dev.xinfer.runtime.python.PythonServices;
import dev.xinfer.runtime.python.RowBlocks;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.schemas.Schema.TypeName;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.transforms.display.DisplayData;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TupleTag;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Runs a Python model (TensorFlow, PyTorch, scikit-learn, ONNX, XGBoost, or your own Beam {@code
 * ModelHandler}: {@link Model#ofHandler}) on each {@link Row} of a {@link PCollection}, from a Java
 * pipeline.
 *
 * <p>The model runs in Python, in a worker pool that xinfer starts, through Beam's cross-language
 * expansion service. Rows cross to Python in blocks of up to {@link #withMaxBatchSize} (each model
 * input's field as one tensor, the outputs back as tensors; see {@link RowBlocks}), so the per-row
 * cost of the crossing is small. Keyed inference, hooks, {@link #withMaxBatchWait}, a Beam {@code
 * ModelHandler}, and {@code STRING} or {@code BYTES} inputs or declared outputs send rows one by
 * one through Beam's Python {@code RunInference}. Each output Row holds every input field, then
 * {@code scores} ({@code ARRAY<FLOAT>}: the model's output for the record), {@code predicted_class}
 * ({@code INT64}: the index of the highest score) and {@code model_id} ({@code STRING}: the model,
 * or model version, that made it); see {@link #outputSchema(Schema)}.
 *
 * <pre>{@code
 * PipelineOptions options = PipelineOptionsFactory.fromArgs(args).create(); // --runner=FlinkRunner
 * Pipeline p = Pipeline.create(options);
 * PCollection<Row> examples = ...; // a schema with a field "features" of ARRAY<FLOAT>
 * PCollection<Row> predictions =
 *     examples.apply(
 *         RunInference.withModel("/models/digits-mlp")   // or .keras, .pt, .joblib, .onnx
 *             .withFeatureField("features")
 *             .withMaxBatchSize(256));
 * p.run().waitUntilFinish();
 * }</pre>
 *
 * <p>Models with other inputs and outputs (several named inputs, integers, strings, bytes, N-d
 * tensors; several outputs, an embedding, a label, one number) name them: {@link #withInput} (and
 * {@link #withInputShape} where the model file records no shape) and {@link #withOutput}; the
 * output Row is then the input fields, the declared outputs and {@code model_id} ({@link
 * #predictionSchema}).
 *
 * <pre>{@code
 * PCollection<Row> predictions =
 *     images.apply(                                       // "pixels": ARRAY<FLOAT>, 64 values
 *         RunInference.withModel("/models/digits-cnn.pt") // returns (probabilities, embedding)
 *             .withInput("images", "pixels")
 *             .withInputShape("images", 8, 8, 1)
 *             .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
 *             .withOutput("embedding", FieldType.array(FieldType.FLOAT)));
 * }</pre>
 *
 * <p>The same settings give the other forms:
 *
 * <ul>
 *   <li>{@link #withFailures()}: predictions and a dead-letter output of the records that got none,
 *       each with the original input, the stage that failed, the error type and its message ({@link
 *       #failureSchema(Schema)}); records in = predictions + failures.
 *   <li>{@link #keyed()}: {@code PCollection<KV<String, Row>>} in and out, keys kept; with {@link
 *       #withModelsByKey} each key's records run on the model mapped to it.
 * </ul>
 *
 * <p>Without {@link #withFailures()}, a record that gets no prediction (a feature array of the
 * wrong length, a null, a value that is not a number, NaN under {@link NanPolicy#REJECT}, a model
 * error) fails the run with a message naming the record, the field and what was wrong.
 *
 * <p>Without {@link #withExpansionService}, xinfer starts its Python services itself (see {@link
 * PythonServices}) with the interpreter named by {@code --xinferPython}, {@code $XINFER_PYTHON}, or
 * {@code .venv/bin/python} in the working directory; they serve only this JVM (a secret per run).
 * With {@code --runner=FlinkRunner} or {@code SparkRunner} the pipeline runs on Beam's portable
 * runner for that engine; the user's code and flags stay as they are. Metrics (inferences, batch
 * sizes and latencies, model load time, failures per stage) are read back with {@link
 * InferenceMetrics}.
 */
@AutoValue
public abstract class RunInference extends PTransform<PCollection<Row>, PCollection<Row>> {
  /** The Python transform this expands to: the only name xinfer's expansion service allows. */
  public static final String PYTHON_TRANSFORM = "xinfer.transforms.RowInference";

  public static final String SCORES_FIELD = "scores";
  public static final String PREDICTED_CLASS_FIELD = "predicted_class";
  public static final String MODEL_ID_FIELD = "model_id";

  /** Fields of a failure Row: see {@link #failureSchema(Schema)}. */
  public static final String INPUT_FIELD = "input";

  public static final String KEY_FIELD = "key";
  public static final String STAGE_FIELD = "stage";
  public static final String ERROR_TYPE_FIELD = "error_type";
  public static final String ERROR_MESSAGE_FIELD = "error_message";

  public static final String DEFAULT_FEATURE_FIELD = "features";
  public static final int DEFAULT_MIN_BATCH_SIZE = 1;
  public static final int DEFAULT_MAX_BATCH_SIZE = 256;

  /** What to do with NaN or infinite feature values. */
  public enum NanPolicy {
    /** The record fails in the {@code conversion} stage (the default). */
    REJECT,
    /** The record reaches the model as it is. */
    ALLOW
  }

  private static final Set<TypeName> NUMERIC =
      EnumSet.of(
          TypeName.BYTE,
          TypeName.INT16,
          TypeName.INT32,
          TypeName.INT64,
          TypeName.FLOAT,
          TypeName.DOUBLE);

  abstract @Nullable Model getModel();

  abstract Map<String, Model> getModelsByKey();

  abstract String getFeatureField();

  abstract int getMinBatchSize();

  abstract int getMaxBatchSize();

  abstract @Nullable Duration getMaxBatchWait();

  abstract @Nullable Integer getMaxModelsInMemory();

  abstract @Nullable String getInferenceArgsJson();

  abstract @Nullable String getPreprocess();

  abstract @Nullable String getPostprocess();

  abstract NanPolicy getNanPolicy();

  abstract @Nullable Duration getRefreshInterval();

  abstract @Nullable String getExpansionService();

  abstract @Nullable String getExpansionServiceSecretFile();

  /** Named model inputs: model input name to the Row field it comes from, in order. */
  abstract Map<String, String> getInputs();

  /** Per-record shapes given with {@link #withInputShape}, by input name. */
  abstract Map<String, List<Integer>> getInputShapes();

  /** Declared outputs: output field name to its type, in order. */
  abstract Map<String, FieldType> getOutputs();

  abstract Builder toBuilder();

  @AutoValue.Builder
  abstract static class Builder {
    abstract Builder setModel(@Nullable Model value);

    abstract Builder setModelsByKey(Map<String, Model> value);

    abstract Builder setFeatureField(String value);

    abstract Builder setMinBatchSize(int value);

    abstract Builder setMaxBatchSize(int value);

    abstract Builder setMaxBatchWait(@Nullable Duration value);

    abstract Builder setMaxModelsInMemory(@Nullable Integer value);

    abstract Builder setInferenceArgsJson(@Nullable String value);

    abstract Builder setPreprocess(@Nullable String value);

    abstract Builder setPostprocess(@Nullable String value);

    abstract Builder setNanPolicy(NanPolicy value);

    abstract Builder setRefreshInterval(@Nullable Duration value);

    abstract Builder setExpansionService(@Nullable String value);

    abstract Builder setExpansionServiceSecretFile(@Nullable String value);

    abstract Builder setInputs(Map<String, String> value);

    abstract Builder setInputShapes(Map<String, List<Integer>> value);

    abstract Builder setOutputs(Map<String, FieldType> value);

    abstract RunInference build();
  }

  private static Builder defaults() {
    return new AutoValue_RunInference.Builder()
        .setModelsByKey(Collections.emptyMap())
        .setInputs(Collections.emptyMap())
        .setInputShapes(Collections.emptyMap())
        .setOutputs(Collections.emptyMap())
        .setFeatureField(DEFAULT_FEATURE_FIELD)
        .setMinBatchSize(DEFAULT_MIN_BATCH_SIZE)
        .setMaxBatchSize(DEFAULT_MAX_BATCH_SIZE)
        .setNanPolicy(NanPolicy.REJECT);
  }

  /**
   * Inference with the model at {@code modelUri}, its framework told by its name (see {@link
   * Model}). A relative path is resolved against the working directory.
   */
  public static RunInference withModel(String modelUri) {
    checkArgument(
        modelUri != null && !modelUri.trim().isEmpty(),
        "withModel(modelUri) needs the path of a model file or directory");
    return withModel(Model.of(modelUri));
  }

  /** Inference with {@code model}: its framework, id or PyTorch class set on the {@link Model}. */
  public static RunInference withModel(Model model) {
    checkArgument(model != null, "withModel(model) needs a Model, e.g. Model.of(path)");
    return defaults().setModel(model).build();
  }

  /**
   * Keyed inference with several models: each key's records run on the model mapped to it. Apply it
   * through {@link #keyed()} to a {@code PCollection<KV<String, Row>>}. A record whose key has no
   * model fails (stage {@code routing}). Keys mapped to equal Models share one loaded model.
   */
  public static RunInference withModelsByKey(Map<String, Model> modelsByKey) {
    checkArgument(
        modelsByKey != null && !modelsByKey.isEmpty(),
        "withModelsByKey(modelsByKey) needs at least one key and its Model");
    modelsByKey.forEach(
        (k, m) ->
            checkArgument(
                k != null && m != null, "withModelsByKey(...) has a null key or model: %s", k));
    return defaults()
        .setModelsByKey(Collections.unmodifiableMap(new TreeMap<>(modelsByKey)))
        .build();
  }

  /**
   * The input field holding the input of a single-input model, an array of numbers. Default {@code
   * features}. For several inputs, or inputs of other types, use {@link #withInput} instead.
   */
  public RunInference withFeatureField(String fieldName) {
    checkArgument(
        fieldName != null && !fieldName.isEmpty(),
        "withFeatureField(fieldName) needs the name of the input's array-of-numbers field");
    checkArgument(
        getInputs().isEmpty(),
        "withFeatureField(\"%s\") names the one input of a single-input model, but withInput(...) "
            + "already names the model's inputs %s; use one of the two",
        fieldName,
        getInputs().keySet());
    return toBuilder().setFeatureField(fieldName).build();
  }

  /**
   * Feeds the model input named {@code modelInput} from the Row field {@code field}; call once per
   * input (several allowed, in the order a PyTorch {@code forward} takes them). The tensor's dtype
   * follows from the field's type: {@code INT32}, {@code INT64}, {@code FLOAT}, {@code DOUBLE},
   * {@code BOOLEAN} (or {@code BYTE}, {@code INT16}) scalars and arrays, arrays of arrays for N-d
   * tensors; {@code STRING} and {@code BYTES} reach the model (a TF string tensor, a tokenizer, a
   * hook) as they are. Where the model file records an input's dtype (a SavedModel signature, an
   * ONNX graph), the values are converted to it. Replaces {@link #withFeatureField}.
   *
   * <pre>{@code
   * RunInference.withModel("/models/digits-two-input")
   *     .withInput("pixels", "pixels")   // ARRAY<FLOAT>, 64 values
   *     .withInput("ink", "inked")       // INT64
   *     .withOutput("digit", FieldType.INT64);
   * }</pre>
   */
  public RunInference withInput(String modelInput, String field) {
    checkArgument(
        modelInput != null && !modelInput.isEmpty() && field != null && !field.isEmpty(),
        "withInput(modelInput, field) needs the model's input name and the Row field it comes "
            + "from; got %s, %s",
        modelInput,
        field);
    checkArgument(
        !getInputs().containsKey(modelInput),
        "withInput(\"%s\", ...) is given twice; name each model input once",
        modelInput);
    checkArgument(
        DEFAULT_FEATURE_FIELD.equals(getFeatureField()),
        "withInput(\"%s\", \"%s\") names the model's inputs, but withFeatureField(\"%s\") already "
            + "names its one input; use one of the two",
        modelInput,
        field,
        getFeatureField());
    Map<String, String> inputs = new LinkedHashMap<>(getInputs());
    inputs.put(modelInput, field);
    return toBuilder().setInputs(Collections.unmodifiableMap(inputs)).build();
  }

  /**
   * The shape of one record's value for an input whose model file does not record it (a TorchScript
   * file, say): {@code name} is a {@link #withInput} name, or the {@link #withFeatureField} field.
   * A record with as many values as the shape holds (flat or nested) is reshaped to it; any other
   * record fails (stage {@code conversion}).
   *
   * <pre>{@code
   * RunInference.withModel("/models/digits-cnn.pt")        // forward(images: [N, 8, 8, 1])
   *     .withInput("images", "pixels")                     // ARRAY<FLOAT>, 64 values
   *     .withInputShape("images", 8, 8, 1)
   * }</pre>
   */
  public RunInference withInputShape(String name, int... dims) {
    checkArgument(
        name != null && !name.isEmpty(),
        "withInputShape(name, dims...) needs the input's name (a withInput name, or the feature "
            + "field)");
    checkArgument(
        dims != null && dims.length > 0,
        "withInputShape(\"%s\", dims...) needs at least one dimension, e.g. 8, 8, 1",
        name);
    List<Integer> shape = new ArrayList<>();
    for (int d : dims) {
      checkArgument(
          d >= 1, "withInputShape(\"%s\", ...): each dimension must be positive; got %s", name, d);
      shape.add(d);
    }
    Map<String, List<Integer>> shapes = new LinkedHashMap<>(getInputShapes());
    shapes.put(name, Collections.unmodifiableList(shape));
    return toBuilder().setInputShapes(Collections.unmodifiableMap(shapes)).build();
  }

  /**
   * Declares an output field: each prediction carries {@code name} of {@code type}, taken from the
   * model's output of that name (a SavedModel signature's, an ONNX graph's, a dict a PyTorch module
   * or Beam ModelHandler returns), or by position for a model that returns a tuple, or the model's
   * one output when one field is declared. Call once per output (several allowed). Types: {@code
   * FLOAT}, {@code DOUBLE}, {@code INT32}, {@code INT64} (or {@code BYTE}, {@code INT16}), {@code
   * BOOLEAN}, {@code STRING}, {@code BYTES}, and {@code FieldType.array(...)} of them (nested for
   * N-d). With declared outputs, the output Row is the input fields, then the declared outputs,
   * then {@code model_id} (see {@link #predictionSchema}); without, it is {@code scores}, {@code
   * predicted_class} and {@code model_id}. A regressor declares one number: {@code
   * withOutput("prediction", FieldType.DOUBLE)}. A record whose output does not fit the declared
   * type or shape fails (stage {@code postprocessing}) with the reason.
   */
  public RunInference withOutput(String name, FieldType type) {
    checkArgument(
        name != null && !name.isEmpty(),
        "withOutput(name, type) needs the output's name (the model's output name)");
    checkArgument(
        !MODEL_ID_FIELD.equals(name),
        "withOutput(\"%s\", ...): every prediction carries %s already; name the output otherwise",
        name,
        MODEL_ID_FIELD);
    checkArgument(
        !getOutputs().containsKey(name),
        "withOutput(\"%s\", ...) is given twice; declare each output once",
        name);
    checkArgument(type != null, "withOutput(\"%s\", type) needs a FieldType", name);
    pythonType(type, "withOutput(\"" + name + "\", " + type + ")", false);
    Map<String, FieldType> outputs = new LinkedHashMap<>(getOutputs());
    outputs.put(name, type);
    return toBuilder().setOutputs(Collections.unmodifiableMap(outputs)).build();
  }

  /**
   * The smallest batch Beam's batching forms when it can (default 1); rows sent one by one only
   * (keyed, hooks, batch wait): blocks are as full as a bundle allows.
   */
  public RunInference withMinBatchSize(int minBatchSize) {
    checkArgument(
        minBatchSize >= 1, "withMinBatchSize(%s) needs a size of at least 1", minBatchSize);
    return toBuilder().setMinBatchSize(minBatchSize).build();
  }

  /** The largest batch handed to the model at once, and the largest block (default 256). */
  public RunInference withMaxBatchSize(int maxBatchSize) {
    checkArgument(
        maxBatchSize >= 1, "withMaxBatchSize(%s) needs a size of at least 1", maxBatchSize);
    return toBuilder().setMaxBatchSize(maxBatchSize).build();
  }

  /**
   * Streaming: the longest a record waits for its batch to fill (default: no bound; a batch is
   * flushed at the end of each bundle). Uses Beam's stateful batching, which needs state and timers
   * in the Python stage: Flink and Spark run it, the DirectRunner refuses it at construction.
   */
  public RunInference withMaxBatchWait(Duration maxWait) {
    checkArgument(
        maxWait != null && !maxWait.isNegative() && !maxWait.isZero(),
        "withMaxBatchWait(maxWait) needs a positive duration; got %s",
        maxWait);
    return toBuilder().setMaxBatchWait(maxWait).build();
  }

  /**
   * Keyed inference: the most models each Python worker holds at once (least recently used out).
   */
  public RunInference withMaxModelsInMemory(int maxModels) {
    checkArgument(maxModels >= 1, "withMaxModelsInMemory(%s) needs at least 1", maxModels);
    return toBuilder().setMaxModelsInMemory(maxModels).build();
  }

  /**
   * Keyword arguments for each model call: PyTorch {@code forward}, a Keras model's call, a
   * scikit-learn model's {@code predict_proba}/{@code predict}. Values: numbers, strings, booleans,
   * lists. A SavedModel signature or ONNX model takes none (refused at construction).
   */
  public RunInference withInferenceArgs(Map<String, ?> inferenceArgs) {
    checkArgument(inferenceArgs != null, "withInferenceArgs(args) needs a map (empty for none)");
    return toBuilder()
        .setInferenceArgsJson(
            inferenceArgs.isEmpty() ? null : Model.json(inferenceArgs, "withInferenceArgs"))
        .build();
  }

  /**
   * A Python function, {@code package.module:function} installed in the worker venv, that makes
   * each record's model input from the record (a Row, fields as attributes), instead of reading the
   * feature field; the feature field may then have any type. An exception fails that record (stage
   * {@code preprocessing}).
   */
  public RunInference withPreprocess(String pythonFunction) {
    Model.checkPythonName(pythonFunction, "withPreprocess(pythonFunction)", "function");
    return toBuilder().setPreprocess(pythonFunction).build();
  }

  /**
   * A Python function, {@code package.module:function} installed in the worker venv, that turns
   * each record's model output (a numpy array) into its scores. An exception fails that record
   * (stage {@code postprocessing}).
   */
  public RunInference withPostprocess(String pythonFunction) {
    Model.checkPythonName(pythonFunction, "withPostprocess(pythonFunction)", "function");
    return toBuilder().setPostprocess(pythonFunction).build();
  }

  /** NaN and infinite feature values: {@link NanPolicy#REJECT} (default) or pass them through. */
  public RunInference withNanPolicy(NanPolicy policy) {
    checkArgument(policy != null, "withNanPolicy(policy) needs REJECT or ALLOW");
    return toBuilder().setNanPolicy(policy).build();
  }

  /**
   * Model refresh: the model URI is a glob pattern of versions (e.g. {@code /models/digits/v*});
   * the newest, last in natural name order ({@code v10} after {@code v9}, like TF Serving's
   * numbered versions), is loaded, and every {@code interval} each worker looks for a newer one,
   * which serves the batches after it loads. Each prediction's {@code model_id} is the file name of
   * the version that made it, so a Model id cannot be set too. A version that fails to load is
   * logged and skipped until the next look. Works in batch and streaming. Write a new version under
   * another name and rename it into place, so no worker sees it half-written.
   */
  public RunInference withModelRefresh(Duration interval) {
    checkArgument(
        interval != null && !interval.isNegative() && !interval.isZero(),
        "withModelRefresh(interval) needs a positive duration; got %s",
        interval);
    return toBuilder().setRefreshInterval(interval).build();
  }

  /**
   * Uses the xinfer expansion service already running at {@code hostPort} (e.g. {@code
   * 127.0.0.1:8097}) instead of starting one; {@code secretFile} is the file it was started with
   * ({@code xinfer-expansion-service --port 8097 --secret-file F}; mode 0600, read when the
   * pipeline is built). The service refuses calls without its secret.
   */
  public RunInference withExpansionService(String hostPort, String secretFile) {
    checkArgument(
        hostPort != null && hostPort.lastIndexOf(':') > 0,
        "withExpansionService(hostPort, secretFile) needs HOST:PORT, e.g. 127.0.0.1:8097; got %s",
        hostPort);
    checkArgument(
        secretFile != null && !secretFile.isEmpty(),
        "withExpansionService(hostPort, secretFile) needs the secret file the service was started "
            + "with (xinfer-expansion-service --secret-file F)");
    return toBuilder()
        .setExpansionService(hostPort)
        .setExpansionServiceSecretFile(secretFile)
        .build();
  }

  /** This inference with a dead-letter output: see {@link WithDeadLetter}. */
  public WithDeadLetter withFailures() {
    return new WithDeadLetter(this);
  }

  /** This inference on {@code KV<String, Row>}: see {@link Keyed}. */
  public Keyed keyed() {
    return new Keyed(this);
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

  /**
   * The output schema of this inference for an input schema: {@link #outputSchema(Schema)}, or with
   * declared outputs ({@link #withOutput}) the input fields, each declared output, then {@code
   * model_id}.
   */
  public Schema predictionSchema(Schema inputSchema) {
    if (getOutputs().isEmpty()) {
      return outputSchema(inputSchema);
    }
    Schema.Builder schema = Schema.builder().addFields(inputSchema.getFields());
    getOutputs().forEach(schema::addField);
    return schema.addField(MODEL_ID_FIELD, FieldType.STRING).build();
  }

  /**
   * The schema of a failure: {@code input} (the original input Row), {@code key} (keyed inference,
   * else null), {@code stage} ({@code preprocessing}, {@code conversion}, {@code inference}, {@code
   * postprocessing}, or {@code routing} for a key with no model), {@code error_type} (the Python
   * exception's class), {@code error_message} and {@code model_id} (null when no model was chosen).
   */
  public static Schema failureSchema(Schema inputSchema) {
    return Schema.builder()
        .addRowField(INPUT_FIELD, inputSchema)
        .addNullableField(KEY_FIELD, FieldType.STRING)
        .addStringField(STAGE_FIELD)
        .addStringField(ERROR_TYPE_FIELD)
        .addStringField(ERROR_MESSAGE_FIELD)
        .addNullableField(MODEL_ID_FIELD, FieldType.STRING)
        .build();
  }

  @Override
  public PCollection<Row> expand(PCollection<Row> input) {
    return predictions(expandPython(input, rowSchemaOf(input), false, false));
  }

  /**
   * {@link RunInference} with a dead-letter output: {@code PCollection<Row>} in, Beam's {@link
   * WithFailures.Result} out, whose {@code output()} holds the predictions and {@code failures()}
   * the records that got none, as Rows of {@link #failureSchema(Schema)}.
   *
   * <pre>{@code
   * WithFailures.Result<PCollection<Row>, Row> result =
   *     examples.apply(RunInference.withModel("/models/digits-mlp").withFailures());
   * result.output();    // predictions
   * result.failures();  // e.g. write to a dead-letter table
   * }</pre>
   */
  public static final class WithDeadLetter
      extends PTransform<PCollection<Row>, WithFailures.Result<PCollection<Row>, Row>> {
    private final RunInference inference;

    private WithDeadLetter(RunInference inference) {
      this.inference = inference;
    }

    @Override
    public WithFailures.Result<PCollection<Row>, Row> expand(PCollection<Row> input) {
      PCollectionTuple outputs = inference.expandPython(input, rowSchemaOf(input), false, true);
      return WithFailures.Result.of(predictions(outputs), failures(outputs));
    }

    @Override
    public void populateDisplayData(DisplayData.Builder builder) {
      inference.populateDisplayData(builder);
    }
  }

  /**
   * {@link RunInference} on keyed records: {@code PCollection<KV<String, Row>>} in and out, each
   * prediction under its record's key. With {@link #withModelsByKey}, each key's records run on its
   * model; with {@link #withModel}, on the one model.
   *
   * <pre>{@code
   * PCollection<KV<String, Row>> predictions =
   *     keyedExamples.apply(
   *         RunInference.withModelsByKey(
   *                 Map.of("tf", Model.of("/models/digits-mlp"),
   *                        "sk", Model.of("/models/digits-sklearn.joblib")))
   *             .withMaxModelsInMemory(1)
   *             .keyed());
   * }</pre>
   */
  public static final class Keyed
      extends PTransform<PCollection<KV<String, Row>>, PCollection<KV<String, Row>>> {
    private final RunInference inference;

    private Keyed(RunInference inference) {
      this.inference = inference;
    }

    /** Keyed inference with a dead-letter output (failures carry the key). */
    public KeyedWithDeadLetter withFailures() {
      return new KeyedWithDeadLetter(inference);
    }

    @Override
    public PCollection<KV<String, Row>> expand(PCollection<KV<String, Row>> input) {
      return keyedPredictions(inference.expandPython(input, rowSchemaOfKeyed(input), true, false));
    }

    @Override
    public void populateDisplayData(DisplayData.Builder builder) {
      inference.populateDisplayData(builder);
    }
  }

  /** Keyed inference with a dead-letter output: see {@link Keyed} and {@link #failureSchema}. */
  public static final class KeyedWithDeadLetter
      extends PTransform<
          PCollection<KV<String, Row>>, WithFailures.Result<PCollection<KV<String, Row>>, Row>> {
    private final RunInference inference;

    private KeyedWithDeadLetter(RunInference inference) {
      this.inference = inference;
    }

    @Override
    public WithFailures.Result<PCollection<KV<String, Row>>, Row> expand(
        PCollection<KV<String, Row>> input) {
      PCollectionTuple outputs = inference.expandPython(input, rowSchemaOfKeyed(input), true, true);
      return WithFailures.Result.of(keyedPredictions(outputs), failures(outputs));
    }

    @Override
    public void populateDisplayData(DisplayData.Builder builder) {
      inference.populateDisplayData(builder);
    }
  }

  /**
   * Expands the Python transform on {@code input} (Rows, or KV of String and Row when {@code
   * keyed}); the outputs are tagged {@code predictions} and, with {@code deadLetter}, {@code
   * failures}, each with its coder set.
   */
  private PCollectionTuple expandPython(
      PCollection<?> input, Schema rowSchema, boolean keyed, boolean deadLetter) {
    checkSettings(keyed);
    checkInputs(rowSchema);
    Schema outputSchema = predictionSchema(rowSchema);
    Coder<?> predictionCoder =
        keyed
            ? KvCoder.of(StringUtf8Coder.of(), RowCoder.of(outputSchema))
            : RowCoder.of(outputSchema);
    String address = getExpansionService();
    PythonTransforms.Service service =
        address == null
            ? PythonTransforms.Service.ofRun()
            : PythonTransforms.Service.at(
                address,
                checkStateNotNull(getExpansionServiceSecretFile()),
                "withExpansionService(" + address + ", secretFile)");
    return PythonTransforms.apply(
        input,
        PYTHON_TRANSFORM,
        kwargs(keyed, deadLetter, input.getPipeline().getOptions().as(XinferOptions.class)),
        service,
        blocksAllowed(keyed, rowSchema)
            ? PythonTransforms.Blocks.of(rowSchema, tensorFields(), getMaxBatchSize(), outputSchema)
            : null,
        predictionCoder,
        deadLetter ? RowCoder.of(failureSchema(rowSchema)) : null);
  }

  /**
   * Whether rows may cross to Python in blocks (see {@link PythonTransforms.Blocks}): when every
   * model input's field and every declared output is a number or a boolean, a scalar or arrays of
   * them ({@link RowBlocks#isTensor}); so not with a {@code STRING} or {@code BYTES} input or
   * output ({@link RowBlocks} says why). Nor when keyed, with hooks (they take and give single
   * records), with a batch wait (Python's stateful batching across bundles), or with a Beam {@code
   * ModelHandler} ({@link Model#ofHandler}: it takes a list of records, not tensors). {@code
   * --xinferRowBlocks=false} turns them off too.
   */
  private boolean blocksAllowed(boolean keyed, Schema rowSchema) {
    return !keyed
        && getModel() != null
        && getModel().getHandler() == null
        && getPreprocess() == null
        && getPostprocess() == null
        && getMaxBatchWait() == null
        && tensorFields().stream()
            .allMatch(field -> RowBlocks.isTensor(rowSchema.getField(field).getType()))
        && getOutputs().values().stream().allMatch(RowBlocks::isTensor);
  }

  /** The fields that hold the model's inputs, in order: the feature field, or each input's. */
  private List<String> tensorFields() {
    return getInputs().isEmpty()
        ? List.of(getFeatureField())
        : new ArrayList<>(getInputs().values());
  }

  private void checkSettings(boolean keyed) {
    checkArgument(
        getMinBatchSize() <= getMaxBatchSize(),
        "withMinBatchSize(%s) is larger than withMaxBatchSize(%s); make the minimum the smaller",
        getMinBatchSize(),
        getMaxBatchSize());
    if (!getModelsByKey().isEmpty()) {
      checkArgument(
          keyed,
          "withModelsByKey(...) chooses a model per key: apply .keyed() to a "
              + "PCollection<KV<String, Row>>");
    }
    for (Model model : models()) {
      checkArgument(
          getRefreshInterval() == null || model.getHandler() == null,
          "withModelRefresh(...) watches model files; Model.ofHandler(\"%s\", ...) loads its "
              + "own model. Drop one of the two",
          model.getHandler());
    }
    if (getRefreshInterval() != null) {
      for (Model model : models()) {
        checkArgument(
            model.getId() == null,
            "withModelRefresh(...): each prediction carries the id of the version that made it "
                + "(its file name); remove withId(\"%s\") from the Model",
            model.getId());
      }
    }
    checkArgument(
        getMaxModelsInMemory() == null || keyed,
        "withMaxModelsInMemory(...) bounds the models of keyed inference: use withModelsByKey "
            + "and .keyed()");
  }

  private List<Model> models() {
    List<Model> models = new ArrayList<>(getModelsByKey().values());
    if (getModel() != null) {
      models.add(getModel());
    }
    return models;
  }

  Map<String, Object> kwargs(boolean keyed, boolean deadLetter, XinferOptions options) {
    Map<String, Object> kwargs = new LinkedHashMap<>();
    if (getModel() != null) {
      kwargs.putAll(getModel().pythonArgs());
    } else {
      // Keys mapped to equal Models share one handler (and one loaded model).
      Map<Model, List<String>> keysByModel = new LinkedHashMap<>();
      getModelsByKey()
          .forEach((k, m) -> keysByModel.computeIfAbsent(m, x -> new ArrayList<>()).add(k));
      List<Map<String, Object>> models = new ArrayList<>();
      keysByModel.forEach(
          (model, keys) -> {
            Map<String, Object> mapping = new LinkedHashMap<>();
            mapping.put("keys", keys);
            mapping.putAll(model.pythonArgs());
            models.add(mapping);
          });
      kwargs.put("models", Model.json(models, "withModelsByKey"));
    }
    kwargs.put("feature_field", getFeatureField());
    kwargs.put("keyed", keyed);
    kwargs.put("dead_letter", deadLetter);
    kwargs.put("min_batch_size", getMinBatchSize());
    kwargs.put("max_batch_size", getMaxBatchSize());
    putIfSet(
        kwargs,
        "max_batch_wait_secs",
        getMaxBatchWait() == null ? null : seconds(getMaxBatchWait()));
    putIfSet(kwargs, "max_models_in_memory", getMaxModelsInMemory());
    putIfSet(kwargs, "inference_args", getInferenceArgsJson());
    putIfSet(kwargs, "preprocess", getPreprocess());
    putIfSet(kwargs, "postprocess", getPostprocess());
    kwargs.put("nan_policy", getNanPolicy().name().toLowerCase(java.util.Locale.ROOT));
    int bundleTimeout = options.getXinferBundleTimeout();
    checkArgument(
        bundleTimeout >= 0,
        "--xinferBundleTimeout=%s: give seconds a batch may take in Python, or 0 for no limit",
        bundleTimeout);
    if (bundleTimeout > 0) {
      kwargs.put("bundle_timeout_secs", bundleTimeout);
    }
    putIfSet(
        kwargs,
        "refresh_interval_secs",
        getRefreshInterval() == null ? null : seconds(getRefreshInterval()));
    if (!getInputs().isEmpty()) {
      List<Map<String, Object>> inputs = new ArrayList<>();
      getInputs()
          .forEach(
              (name, field) -> {
                Map<String, Object> input = new LinkedHashMap<>();
                input.put("name", name);
                input.put("field", field);
                putIfSet(input, "shape", getInputShapes().get(name));
                inputs.add(input);
              });
      kwargs.put("inputs", Model.json(inputs, "withInput"));
    }
    if (!getOutputs().isEmpty()) {
      List<Map<String, Object>> outputs = new ArrayList<>();
      getOutputs()
          .forEach(
              (name, type) -> {
                Map<String, Object> output = new LinkedHashMap<>();
                output.put("name", name);
                output.put("type", pythonType(type, "withOutput", false));
                outputs.add(output);
              });
      kwargs.put("outputs", Model.json(outputs, "withOutput"));
    }
    return kwargs;
  }

  /**
   * The name Python gives a field type ({@code float32}, {@code array<int64>}, ...); refuses the
   * types a model input ({@code input}) or output cannot have, naming {@code method}.
   */
  static String pythonType(FieldType type, String method, boolean input) {
    if (type.getTypeName() == TypeName.ARRAY
        || (input && type.getTypeName() == TypeName.ITERABLE)) {
      FieldType element = checkStateNotNull(type.getCollectionElementType());
      checkArgument(
          input || !element.getNullable(),
          "%s: the array's elements must not be nullable (FieldType.array(FieldType.FLOAT))",
          method);
      return "array<" + pythonType(element, method, input) + ">";
    }
    checkArgument(
        input || !type.getNullable(),
        "%s: an output is never null; give a type without withNullable(true)",
        method);
    String name = ELEMENT_TYPES.get(type.getTypeName());
    checkArgument(
        name != null,
        "%s: a model %s is a number (BYTE, INT16, INT32, INT64, FLOAT, DOUBLE), BOOLEAN, STRING, "
            + "BYTES, or FieldType.array(...) of them; %s is none of these%s",
        method,
        input ? "input" : "output",
        type,
        type.getTypeName() == TypeName.ITERABLE ? " (use FieldType.array, not iterable)" : "");
    return name;
  }

  private static final Map<TypeName, String> ELEMENT_TYPES =
      Map.of(
          TypeName.BYTE, "int8",
          TypeName.INT16, "int16",
          TypeName.INT32, "int32",
          TypeName.INT64, "int64",
          TypeName.FLOAT, "float32",
          TypeName.DOUBLE, "float64",
          TypeName.BOOLEAN, "bool",
          TypeName.STRING, "str",
          TypeName.BYTES, "bytes");

  private static double seconds(Duration d) {
    return d.toNanos() / 1e9;
  }

  /** The cross-field checks of the model's inputs and outputs against the input schema. */
  private void checkInputs(Schema schema) {
    List<String> added = new ArrayList<>(getOutputs().keySet());
    if (added.isEmpty()) {
      added.add(SCORES_FIELD);
      added.add(PREDICTED_CLASS_FIELD);
    }
    added.add(MODEL_ID_FIELD);
    for (String name : added) {
      checkArgument(
          !schema.hasField(name),
          "The input already has a field '%s', which RunInference adds to its output; rename "
              + "or drop it before RunInference%s",
          name,
          getOutputs().containsKey(name) ? ", or name the output otherwise" : "");
    }
    for (String name : getInputShapes().keySet()) {
      checkArgument(
          getInputs().containsKey(name),
          "withInputShape(\"%s\", ...) names no withInput(...) input (inputs: %s); name the "
              + "input and its field with withInput(\"%s\", field)",
          name,
          getInputs().keySet(),
          name);
    }
    if (getInputs().isEmpty()) {
      checkInputSchema(schema, getFeatureField(), getPreprocess() != null);
      return;
    }
    checkArgument(
        getPreprocess() == null,
        "withPreprocess(\"%s\") makes the model input from the whole record; drop withInput(...), "
            + "or return a dict of the inputs by name from the function",
        getPreprocess());
    getInputs()
        .forEach(
            (name, field) -> {
              checkArgument(
                  schema.hasField(field),
                  "withInput(\"%s\", \"%s\"): the input has no field '%s' (fields: %s)",
                  name,
                  field,
                  field,
                  schema.getFieldNames());
              pythonType(
                  schema.getField(field).getType(),
                  "withInput(\"" + name + "\", \"" + field + "\")",
                  true);
            });
  }

  static void checkInputSchema(Schema schema, String featureField, boolean preprocessed) {
    if (preprocessed) {
      return;
    }
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
            + "RunInference, name another field with withFeatureField(...), or make the model "
            + "input in Python with withPreprocess(...)",
        featureField,
        type);
  }

  private static Schema rowSchemaOf(PCollection<Row> input) {
    checkArgument(
        input.hasSchema(),
        "RunInference needs a PCollection<Row> with a schema: call setRowSchema(schema) on %s",
        input.getName());
    return input.getSchema();
  }

  private static Schema rowSchemaOfKeyed(PCollection<KV<String, Row>> input) {
    Coder<?> coder = input.getCoder();
    boolean ok =
        coder instanceof KvCoder
            && ((KvCoder<?, ?>) coder).getKeyCoder() instanceof StringUtf8Coder
            && ((KvCoder<?, ?>) coder).getValueCoder() instanceof RowCoder;
    checkArgument(
        ok,
        "RunInference.keyed() needs KV<String, Row> with KvCoder.of(StringUtf8Coder.of(), "
            + "RowCoder.of(schema)); %s has coder %s. Set it with setCoder(...)",
        input.getName(),
        coder);
    return ((RowCoder) ((KvCoder<?, ?>) coder).getValueCoder()).getSchema();
  }

  private static PCollection<Row> predictions(PCollectionTuple outputs) {
    return outputs.get(new TupleTag<Row>(PythonTransforms.PREDICTIONS));
  }

  private static PCollection<KV<String, Row>> keyedPredictions(PCollectionTuple outputs) {
    return outputs.get(new TupleTag<KV<String, Row>>(PythonTransforms.PREDICTIONS));
  }

  private static PCollection<Row> failures(PCollectionTuple outputs) {
    return outputs.get(new TupleTag<Row>(PythonTransforms.FAILURES));
  }

  @Override
  public void populateDisplayData(DisplayData.Builder builder) {
    super.populateDisplayData(builder);
    if (getModel() != null) {
      builder.add(DisplayData.item("model", getModel().getUri()));
    }
    getModelsByKey()
        .forEach((k, m) -> builder.add(DisplayData.item("model[" + k + "]", m.getUri())));
    builder
        .add(
            getInputs().isEmpty()
                ? DisplayData.item("featureField", getFeatureField())
                : DisplayData.item("inputs", getInputs().toString()))
        .addIfNotNull(
            DisplayData.item(
                "inputShapes", getInputShapes().isEmpty() ? null : getInputShapes().toString()))
        .addIfNotNull(
            DisplayData.item("outputs", getOutputs().isEmpty() ? null : getOutputs().toString()))
        .add(DisplayData.item("minBatchSize", getMinBatchSize()))
        .add(DisplayData.item("maxBatchSize", getMaxBatchSize()))
        .addIfNotNull(
            DisplayData.item(
                "maxBatchWait", getMaxBatchWait() == null ? null : getMaxBatchWait().toString()))
        .addIfNotNull(DisplayData.item("preprocess", getPreprocess()))
        .addIfNotNull(DisplayData.item("postprocess", getPostprocess()))
        .add(DisplayData.item("nanPolicy", getNanPolicy().name()))
        .addIfNotNull(
            DisplayData.item(
                "modelRefresh",
                getRefreshInterval() == null ? null : getRefreshInterval().toString()))
        .addIfNotNull(DisplayData.item("expansionService", getExpansionService()));
  }
}
