package dev.xinfer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.auto.value.AutoValue;
import java.io.Serializable;
import java.net.URI;
import java.nio.file.Paths;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * A model for {@link RunInference}: where it is, and what Python needs to load it.
 *
 * <pre>{@code
 * Model.of("/models/digits-mlp");                       // TensorFlow SavedModel directory
 * Model.of("/models/digits-mlp.keras");                 // Keras file
 * Model.of("/models/digits-torch.pt");                  // TorchScript
 * Model.of("/models/digits-torch-state.pt")             // PyTorch state dict
 *     .withModelClass("xinfer.examples.nets:DigitsNet", Map.of("hidden", 32));
 * Model.of("/models/digits-sklearn.joblib");            // scikit-learn (joblib or pickle)
 * Model.of("/models/digits-sklearn.onnx");              // ONNX, run by onnxruntime
 * Model.of("/models/diabetes.xgb.json");                // XGBoost
 * Model.of("/models/vader-sentiment")                   // Hugging Face (config.json inside)
 *     .withTask("text-classification");
 * Model.of("/models/churn/latest").withFramework(Model.Framework.ONNX).withId("churn");
 * Model.ofHandler("my_models.handlers:make_handler",    // your own Beam ModelHandler
 *     Map.of("model_uri", "/models/m.bin"));
 * }</pre>
 *
 * <p>The framework follows from the name ({@code .keras}, {@code .pt}/{@code .pth}/{@code .ts},
 * {@code .joblib}/{@code .pkl}, {@code .onnx}, {@code .xgb.json}/{@code .xgb}/{@code .ubj}, a
 * directory holding {@code saved_model.pb}, or a Hugging Face directory holding {@code
 * config.json}); name it with {@link #withFramework} otherwise. The path is read by the Python
 * workers, so it must be visible to them (on a cluster: a shared or replicated path).
 */
@AutoValue
public abstract class Model implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Pattern PYTHON_NAME =
      Pattern.compile("[A-Za-z_]\\w*(\\.[A-Za-z_]\\w*)*:[A-Za-z_]\\w*");
  private static final Pattern SHA256 = Pattern.compile("[0-9a-fA-F]{64}");
  private static final Pattern DEVICE = Pattern.compile("cpu|cuda(:\\d+)?");

  /** The model frameworks xinfer's Python workers run. */
  public enum Framework {
    TENSORFLOW,
    PYTORCH,
    SKLEARN,
    ONNX,
    XGBOOST,
    HUGGINGFACE;

    String pythonName() {
      return name().toLowerCase(Locale.ROOT);
    }
  }

  abstract String getUri();

  abstract @Nullable Framework getFramework();

  abstract @Nullable String getId();

  abstract @Nullable String getModelClass();

  abstract @Nullable String getModelParamsJson();

  abstract @Nullable String getSha256();

  /** The Beam ModelHandler factory of {@link #ofHandler}, else null. */
  abstract @Nullable String getHandler();

  abstract @Nullable String getTask();

  abstract @Nullable String getDevice();

  abstract Builder toBuilder();

  @AutoValue.Builder
  abstract static class Builder {
    abstract Builder setUri(String value);

    abstract Builder setFramework(@Nullable Framework value);

    abstract Builder setId(@Nullable String value);

    abstract Builder setModelClass(@Nullable String value);

    abstract Builder setModelParamsJson(@Nullable String value);

    abstract Builder setSha256(@Nullable String value);

    abstract Builder setHandler(@Nullable String value);

    abstract Builder setTask(@Nullable String value);

    abstract Builder setDevice(@Nullable String value);

    abstract Model build();
  }

  /**
   * The model at {@code uri}: a file or directory path (relative paths are resolved against the
   * working directory), or, with {@link RunInference#withModelRefresh}, a glob pattern of versions.
   */
  public static Model of(String uri) {
    checkArgument(
        uri != null && !uri.trim().isEmpty(),
        "Model.of(uri) needs the path of a model file or directory");
    return new AutoValue_Model.Builder().setUri(absolute(uri)).build();
  }

  /**
   * Your own Beam Python {@code ModelHandler}: {@code factory}, {@code package.module:name} in a
   * module the operator allowed ({@code --xinferAllowedModules}) and installed in the worker venv,
   * is called with {@code kwargs} (numbers, strings, booleans, lists, maps) and returns the handler
   * (a function that makes one, or a {@code ModelHandler} class). Anything Beam's Python {@code
   * RunInference} runs then runs from Java, with xinfer's batching, dead letters, metrics and model
   * ids ({@code model_id} defaults to {@code factory}). Each record's example is its model input (a
   * float32 array from the feature field, a dict with {@link RunInference#withInput}, or what a
   * preprocess function returns); each {@code PredictionResult.inference} is mapped to the declared
   * outputs ({@link RunInference#withOutput}) or the scores.
   *
   * <pre>{@code
   * Model.ofHandler("xinfer.examples.handlers:beam_sklearn", Map.of("model_uri", path))
   * }</pre>
   */
  public static Model ofHandler(String factory, Map<String, ?> kwargs) {
    checkPythonName(factory, "Model.ofHandler(factory, kwargs)", "function");
    checkArgument(
        kwargs != null, "Model.ofHandler(factory, kwargs): kwargs is null (Map.of() for none)");
    return new AutoValue_Model.Builder()
        .setUri(factory)
        .setHandler(factory)
        .setModelParamsJson(kwargs.isEmpty() ? null : json(kwargs, "Model.ofHandler"))
        .build();
  }

  /** The framework, when the model's name does not tell it. */
  public Model withFramework(Framework framework) {
    checkArgument(framework != null, "withFramework(framework) needs a framework");
    checkNotHandler("withFramework(...)");
    return toBuilder().setFramework(framework).build();
  }

  /**
   * A Hugging Face model's pipeline task: {@code text-classification} (the default; outputs {@code
   * label} STRING, {@code score} FLOAT, {@code scores} ARRAY&lt;FLOAT&gt;, or without declared
   * outputs the scores) or {@code feature-extraction} (output {@code embedding},
   * ARRAY&lt;FLOAT&gt;: the tokens' last hidden states averaged). The model directory holds the
   * model and its tokenizer ({@code save_pretrained}); nothing is downloaded.
   */
  public Model withTask(String task) {
    checkArgument(
        "text-classification".equals(task) || "feature-extraction".equals(task),
        "withTask(task) takes text-classification or feature-extraction; got %s",
        task);
    checkNotHandler("withTask(...)");
    return toBuilder().setTask(task).build();
  }

  /**
   * Where the model runs: {@code cpu} (the default), {@code cuda} or {@code cuda:N} for PyTorch,
   * TensorFlow, ONNX Runtime (its CUDA provider), XGBoost and Hugging Face models. A worker with no
   * such device fails each record with the reason; scikit-learn refuses a GPU at construction.
   */
  public Model withDevice(String device) {
    checkArgument(
        device != null && DEVICE.matcher(device).matches(),
        "withDevice(device) takes cpu, cuda or cuda:N (e.g. cuda:0); got %s",
        device);
    checkNotHandler("withDevice(...)");
    return toBuilder().setDevice(device).build();
  }

  /** The id each prediction carries in {@code model_id}. Default: the model's file name. */
  public Model withId(String id) {
    checkArgument(id != null && !id.isEmpty(), "withId(id) needs a non-empty id");
    return toBuilder().setId(id).build();
  }

  /**
   * For a PyTorch state dict: the {@code nn.Module} class to load it into, as {@code
   * package.module:ClassName} importable in the Python worker venv, and its constructor's keyword
   * arguments (numbers, strings, booleans, lists; may be empty).
   */
  public Model withModelClass(String pythonClass, Map<String, ?> constructorArgs) {
    checkNotHandler("withModelClass(...)");
    checkPythonName(pythonClass, "withModelClass(pythonClass, args)", "ClassName");
    checkArgument(constructorArgs != null, "withModelClass(pythonClass, args): args is null");
    return toBuilder()
        .setFramework(Framework.PYTORCH)
        .setModelClass(pythonClass)
        .setModelParamsJson(
            constructorArgs.isEmpty() ? null : json(constructorArgs, "withModelClass"))
        .build();
  }

  /**
   * Pins the model file to this SHA-256 digest (64 hex digits): the Python workers hash the file
   * and refuse to load it if it differs. For pickle and joblib files, which run code when they
   * load. A single file only (not a directory, not with model refresh).
   */
  public Model withSha256(String hexDigest) {
    checkArgument(
        hexDigest != null && SHA256.matcher(hexDigest).matches(),
        "withSha256(hexDigest) needs the file's SHA-256 as 64 hex digits (sha256sum FILE); got %s",
        hexDigest);
    checkNotHandler("withSha256(...)");
    return toBuilder().setSha256(hexDigest.toLowerCase(Locale.ROOT)).build();
  }

  private void checkNotHandler(String method) {
    checkArgument(
        getHandler() == null,
        "%s applies to a model file; Model.ofHandler(\"%s\", ...) makes a ModelHandler that loads "
            + "its own model. Pass such settings to the factory in its kwargs",
        method,
        getHandler());
  }

  /**
   * Checks that {@code value} is {@code package.module:name}; the module must also be allowed when
   * the services start ({@code --xinferAllowedModules}), which Python checks before importing it.
   */
  static void checkPythonName(@Nullable String value, String method, String name) {
    checkArgument(
        value != null && PYTHON_NAME.matcher(value).matches(),
        "%s needs 'package.module:%s' (a module allowed with --xinferAllowedModules); got %s",
        method,
        name,
        value);
  }

  /** What the Python side takes for this model (see {@code xinfer.transforms.RowInference}). */
  Map<String, Object> pythonArgs() {
    Map<String, Object> args = new LinkedHashMap<>();
    args.put("model_uri", getUri());
    putIfSet(
        args,
        "framework",
        getHandler() != null
            ? "beam_model_handler"
            : getFramework() == null ? null : getFramework().pythonName());
    putIfSet(args, "model_id", getId());
    putIfSet(args, "model_class", getModelClass());
    putIfSet(args, "model_params", getModelParamsJson());
    putIfSet(args, "model_sha256", getSha256());
    putIfSet(args, "task", getTask());
    putIfSet(args, "device", getDevice());
    return args;
  }

  /** Puts {@code value} under {@code key} unless it is null (Python then uses its default). */
  static void putIfSet(Map<String, Object> args, String key, @Nullable Object value) {
    if (value != null) {
      args.put(key, value);
    }
  }

  static String json(Object value, String method) {
    try {
      return JSON.writeValueAsString(value);
    } catch (JsonProcessingException e) {
      throw new IllegalArgumentException(
          method + "(...) takes numbers, strings, booleans, lists and maps of them: " + e, e);
    }
  }

  private static String absolute(String uri) {
    String trimmed = uri.trim();
    if (trimmed.startsWith("file:")) {
      return Paths.get(URI.create(trimmed)).toString();
    }
    if (trimmed.contains("://")) {
      return trimmed;
    }
    return Paths.get(trimmed).toAbsolutePath().normalize().toString();
  }

  static void checkArgument(boolean ok, String message, Object... args) {
    if (!ok) {
      throw new IllegalArgumentException(String.format(message, args));
    }
  }
}
