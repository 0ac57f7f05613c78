package dev.xinfer;

import static dev.xinfer.Model.checkArgument;
import static dev.xinfer.Model.putIfSet;
import static org.apache.beam.sdk.util.Preconditions.checkStateNotNull;

import com.google.auto.value.AutoValue;
import dev.xinfer.runtime.PythonTransforms;
import dev.xinfer.runtime.python.PythonServices;
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
 * Runs a Python model (TensorFlow, PyTorch, scikit-learn or ONNX) on each {@link Row} of a {@link
 * PCollection}, from a Java pipeline.
 *
 * <p>The model runs in Python, in a worker pool that xinfer starts, through Beam's cross-language
 * expansion service. Rows cross to Python in blocks of up to {@link #withMaxBatchSize} (their
 * features as one tensor; see {@link dev.xinfer.runtime.python.RowBlocks}), so the per-row cost of
 * the crossing is small; keyed inference, hooks and {@link #withMaxBatchWait} send rows one by one
 * through Beam's Python {@code RunInference}. Each output Row holds every input field, then {@code
 * scores} ({@code ARRAY<FLOAT>}: the model's output for the record), {@code predicted_class}
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

    abstract RunInference build();
  }

  private static Builder defaults() {
    return new AutoValue_RunInference.Builder()
        .setModelsByKey(Collections.emptyMap())
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

  /** The input field holding the model input, an array of numbers. Default {@code features}. */
  public RunInference withFeatureField(String fieldName) {
    checkArgument(
        fieldName != null && !fieldName.isEmpty(),
        "withFeatureField(fieldName) needs the name of the input's array-of-numbers field");
    return toBuilder().setFeatureField(fieldName).build();
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
    checkInputSchema(rowSchema, getFeatureField(), getPreprocess() != null);
    Schema outputSchema = outputSchema(rowSchema);
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
        blocksAllowed(keyed)
            ? PythonTransforms.Blocks.of(
                rowSchema, getFeatureField(), getMaxBatchSize(), outputSchema)
            : null,
        predictionCoder,
        deadLetter ? RowCoder.of(failureSchema(rowSchema)) : null);
  }

  /**
   * Whether rows may cross to Python in blocks (see {@link PythonTransforms.Blocks}): not when
   * keyed, with hooks (they take and give single records), or with a batch wait (Python's stateful
   * batching across bundles). {@code --xinferRowBlocks=false} and a feature type that cannot be
   * packed turn them off too.
   */
  private boolean blocksAllowed(boolean keyed) {
    return !keyed
        && getPreprocess() == null
        && getPostprocess() == null
        && getMaxBatchWait() == null;
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

  private Map<String, Object> kwargs(boolean keyed, boolean deadLetter, XinferOptions options) {
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
    return kwargs;
  }

  private static double seconds(Duration d) {
    return d.toNanos() / 1e9;
  }

  static void checkInputSchema(Schema schema, String featureField, boolean preprocessed) {
    for (String name : new String[] {SCORES_FIELD, PREDICTED_CLASS_FIELD, MODEL_ID_FIELD}) {
      checkArgument(
          !schema.hasField(name),
          "The input already has a field '%s', which RunInference adds to its output; rename "
              + "or drop it before RunInference",
          name);
    }
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
        .add(DisplayData.item("featureField", getFeatureField()))
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
