package dev.xinfer.pipelines;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.xinfer.Model;
import dev.xinfer.RunInference;
import dev.xinfer.XinferOptions;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import javax.imageio.ImageIO;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The example models whose inputs and outputs are not 64 pixels and scores, each in a pipeline of
 * its own: {@code ./xinfer demo --model NAME} runs one, and {@code ModelExamplesIT} runs each with
 * the same code. Set-up trains every model on data that ships in a package and writes what the
 * model computes in plain Python for each record ({@code <model>.reference.jsonl}); the run's
 * summary counts the predictions that match it.
 *
 * <pre>
 * data set CSV -> parse to the example's Row -> RunInference (its inputs, shape, outputs) -> JSON lines
 *                                                        \-> failures (dead letters) ------> JSON lines
 * </pre>
 *
 * <p>For example, the image CNN on an 8x8 grid reshaped to the 8x8x1 image it takes:
 *
 * <pre>{@code
 * PCollection<Row> digits = ...; // Row(id INT64, label INT64, pixels ARRAY<FLOAT>, grid ARRAY<ARRAY<FLOAT>>, inked INT64)
 * WithFailures.Result<PCollection<Row>, Row> result =
 *     digits.apply(ModelExamples.Example.IMAGE_CNN.inference(modelsDir).withFailures());
 * }</pre>
 */
public final class ModelExamples {
  /** Options of the example pipelines. */
  public interface Options extends XinferOptions {
    @Description(
        "The example to run: digits-cnn.pt, digits-cnn-png, digits-two-input, diabetes.xgb.json, "
            + "vader-sentiment or beam-sklearn-handler.")
    @Validation.Required
    String getExample();

    void setExample(String value);

    @Description("The folder ./xinfer setup trains the example models and writes their data into.")
    @Validation.Required
    String getModelsDir();

    void setModelsDir(String value);

    @Description(
        "Output path prefix: predictions go to PREFIX-predictions-SSSSS-of-NNNNN.jsonl, records "
            + "that got none to PREFIX-failures-SSSSS-of-NNNNN.jsonl, with the reason.")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description("How many records of the example's data set to run (default: all of them).")
    @Nullable Integer getRecords();

    void setRecords(@Nullable Integer value);

    @Description("Seconds between progress lines while a job runs.")
    @org.apache.beam.sdk.options.Default.Integer(5)
    int getProgressSeconds();

    void setProgressSeconds(int value);
  }

  /** A digit: its pixels as a flat array and as an 8x8 grid, and how many of them are inked. */
  public static final Schema DIGIT =
      Schema.builder()
          .addInt64Field("id")
          .addInt64Field("label")
          .addArrayField("pixels", FieldType.FLOAT)
          .addArrayField("grid", FieldType.array(FieldType.FLOAT))
          .addInt64Field("inked")
          .build();

  /** A digit as an 8x8 grayscale PNG whose gray levels are its pixels (0-16, lossless). */
  public static final Schema PNG =
      Schema.builder().addInt64Field("id").addInt64Field("label").addByteArrayField("png").build();

  /** A patient of scikit-learn's diabetes data set: ten features and the disease progression. */
  public static final Schema PATIENT =
      Schema.builder()
          .addInt64Field("id")
          .addDoubleField("target")
          .addArrayField("features", FieldType.DOUBLE)
          .build();

  /**
   * A word or phrase of the VADER lexicon and the sentiment people rated it (negative, neutral,
   * positive).
   */
  public static final Schema PHRASE =
      Schema.builder().addInt64Field("id").addStringField("rated").addStringField("phrase").build();

  /** A digit as the demo pipeline reads it: id, label and the 64 pixels. */
  public static final Schema EXAMPLE = DigitsPipeline.EXAMPLE_SCHEMA;

  /** The examples, by the name {@code ./xinfer demo --model} takes. */
  public enum Example {
    /**
     * A TorchScript CNN: the 8x8 grid reshaped to the 8x8x1 image it takes, its two outputs in
     * order; the device named (the CPU: this machine has no GPU).
     */
    IMAGE_CNN("digits-cnn.pt", "digits.csv", "digits-cnn.pt", DIGIT, "probabilities", "embedding") {
      @Override
      public RunInference inference(Path models) {
        return RunInference.withModel(
                Model.of(models.resolve("digits-cnn.pt").toString()).withDevice("cpu"))
            .withInput("images", "grid") // ARRAY<ARRAY<FLOAT>>, 8x8
            .withInputShape("images", 8, 8, 1)
            .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
            .withOutput("embedding", FieldType.array(FieldType.FLOAT))
            .withMaxBatchSize(64);
      }
    },

    /** The same CNN on PNG bytes, decoded in Python by a preprocess hook. */
    IMAGE_PNG("digits-cnn-png", "digits.csv", "digits-cnn.pt", PNG, "probabilities", "embedding") {
      @Override
      public RunInference inference(Path models) {
        return RunInference.withModel(models.resolve("digits-cnn.pt").toString())
            .withPreprocess("xinfer.examples.hooks:decode_png")
            .withOutput("probabilities", FieldType.array(FieldType.FLOAT))
            .withOutput("embedding", FieldType.array(FieldType.FLOAT));
      }
    },

    /**
     * A SavedModel with two named inputs (float pixels, an INT64 count) and two named outputs (an
     * INT64 and an array).
     */
    TWO_INPUTS(
        "digits-two-input", "digits.csv", "digits-two-input", DIGIT, "digit", "probabilities") {
      @Override
      public RunInference inference(Path models) {
        return RunInference.withModel(models.resolve("digits-two-input").toString())
            .withInput("pixels", "pixels")
            .withInput("ink", "inked")
            .withOutput("digit", FieldType.INT64)
            .withOutput("probabilities", FieldType.array(FieldType.FLOAT));
      }
    },

    /** An XGBoost regressor: one DOUBLE per record, no class. */
    REGRESSOR("diabetes.xgb.json", "diabetes.csv", "diabetes.xgb.json", PATIENT, "prediction") {
      @Override
      public RunInference inference(Path models) {
        return RunInference.withModel(models.resolve("diabetes.xgb.json").toString())
            .withOutput("prediction", FieldType.DOUBLE);
      }
    },

    /**
     * A Hugging Face text classifier (a tiny BERT and its tokenizer, trained in set-up on the VADER
     * lexicon): a STRING in, the label as a STRING and its probability out.
     */
    TEXT("vader-sentiment", "vader.csv", "vader-sentiment", PHRASE, "label", "score") {
      @Override
      public RunInference inference(Path models) {
        return RunInference.withModel(
                Model.of(models.resolve("vader-sentiment").toString())
                    .withTask("text-classification"))
            .withInput("text", "phrase")
            .withOutput("label", FieldType.STRING)
            .withOutput("score", FieldType.FLOAT);
      }
    },

    /**
     * Beam's own scikit-learn {@code ModelHandler}, made by a factory named from Java, with
     * xinfer's dead letters and model ids.
     */
    BEAM_HANDLER("beam-sklearn-handler", "digits.csv", "digits-sklearn.joblib", EXAMPLE, "digit") {
      @Override
      public RunInference inference(Path models) {
        return RunInference.withModel(
                Model.ofHandler(
                    "xinfer.examples.handlers:beam_sklearn",
                    Map.of("model_uri", models.resolve("digits-sklearn.joblib").toString())))
            .withOutput("digit", FieldType.INT64);
      }

      @Override
      public String modelId() {
        return "xinfer.examples.handlers:beam_sklearn";
      }

      @Override
      public Map<Long, JsonNode> reference(Path models) {
        // Its model's reference is the digits models' CSV: id,predicted_class,scores...
        Map<Long, JsonNode> byId = new HashMap<>();
        for (String line : Launcher.dataLines(models.resolve(reference + ".reference.csv"))) {
          String[] cells = line.split(",", 3);
          byId.put(
              Long.parseLong(cells[0]),
              JSON.createObjectNode().put("digit", Long.parseLong(cells[1])));
        }
        return byId;
      }
    };

    /** The name {@code ./xinfer demo --model} takes. */
    public final String demoName;

    /** The data set the rows come from, in the models folder. */
    public final String dataFile;

    /** The model whose plain-Python outputs are the reference. */
    final String reference;

    /** The rows' schema. */
    public final Schema schema;

    /** The outputs compared with the plain-Python reference. */
    public final List<String> checked;

    Example(String demoName, String dataFile, String reference, Schema schema, String... checked) {
      this.demoName = demoName;
      this.dataFile = dataFile;
      this.reference = reference;
      this.schema = schema;
      this.checked = List.of(checked);
    }

    /** The example's RunInference, its model in {@code models}. */
    public abstract RunInference inference(Path models);

    /** The model id each prediction carries. */
    public String modelId() {
      return reference;
    }

    /** One line of the data set as the example's Row. */
    public Row parse(String line) {
      return ModelExamples.parse(this, line);
    }

    /** The first {@code n} rows of the data set (all of them when {@code n} is null). */
    public List<Row> rows(Path models, @Nullable Integer n) {
      List<String> lines = Launcher.dataLines(models.resolve(dataFile));
      return lines.subList(0, n == null ? lines.size() : Math.min(n, lines.size())).stream()
          .map(this::parse)
          .collect(Collectors.toList());
    }

    /** What the model computes in plain Python for each record, by id. */
    public Map<Long, JsonNode> reference(Path models) {
      Map<Long, JsonNode> byId = new HashMap<>();
      for (String line : allLines(models.resolve(reference + ".reference.jsonl"))) {
        try {
          JsonNode node = JSON.readTree(line);
          byId.put(node.get("id").asLong(), node);
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
      }
      return byId;
    }

    /** The example {@code ./xinfer demo --model name} runs. */
    public static Example named(String name) {
      for (Example example : values()) {
        if (example.demoName.equals(name)) {
          return example;
        }
      }
      throw new IllegalArgumentException(
          "--example='"
              + name
              + "' is none of the examples: "
              + Arrays.stream(values()).map(e -> e.demoName).collect(Collectors.joining(", ")));
    }
  }

  private static final ObjectMapper JSON = new ObjectMapper();

  private ModelExamples() {}

  public static void main(String[] args) {
    Launcher.report(() -> run(args));
  }

  /** Runs the example to the end and says how its predictions compare with plain Python. */
  static String run(String[] args) {
    Options options = Launcher.options(args, Options.class);
    if (options.as(StreamingOptions.class).isStreaming()) {
      throw new IllegalArgumentException(
          "the model examples run in batch; ./xinfer demo --mode streaming runs the digits "
              + "pipeline (a model that takes the 64 pixels).");
    }
    Example example = Example.named(options.getExample());
    Pipeline pipeline = build(Pipeline.create(options), options);
    long start = System.nanoTime();
    PipelineResult result = pipeline.run();
    String runner = Launcher.waitWithProgress(result, options, options.getProgressSeconds());
    double seconds = (System.nanoTime() - start) / 1e9;
    Path models = Paths.get(options.getModelsDir());
    long records = example.rows(models, options.getRecords()).size();
    return summarize(example, models, options.getOutput(), records, seconds, runner);
  }

  /**
   * Wires the example: its data set in, its RunInference, predictions and failures out as JSON
   * lines.
   */
  public static Pipeline build(Pipeline pipeline, Options options) {
    Example example = Example.named(options.getExample());
    Path models = Paths.get(options.getModelsDir());
    Integer limit = options.getRecords();
    PCollection<Row> rows =
        pipeline
            .apply("ReadData", TextIO.read().from(models.resolve(example.dataFile).toString()))
            .apply("Parse", ParDo.of(new ParseFn(example, limit)))
            .setRowSchema(example.schema);
    WithFailures.Result<PCollection<Row>, Row> result =
        rows.apply("RunInference", example.inference(models).withFailures());
    result
        .output()
        .apply(
            "FormatPredictions",
            MapElements.into(TypeDescriptors.strings())
                .via(row -> toJson(row, example.checked).toString()))
        .apply(
            "WritePredictions",
            TextIO.write().to(options.getOutput() + "-predictions").withSuffix(".jsonl"));
    result
        .failures()
        .apply(
            "FormatFailures",
            MapElements.into(TypeDescriptors.strings()).via(ModelExamples::failureJson))
        .apply(
            "WriteFailures",
            TextIO.write().to(options.getOutput() + "-failures").withSuffix(".jsonl"));
    return pipeline;
  }

  /** Lines of the data set to the example's Rows; the header and lines past the limit skipped. */
  static final class ParseFn extends DoFn<String, Row> {
    private final Example example;
    private final @Nullable Integer limit;

    ParseFn(Example example, @Nullable Integer limit) {
      this.example = example;
      this.limit = limit;
    }

    @ProcessElement
    public void process(@Element String line, OutputReceiver<Row> out) {
      if (line.startsWith("id,") || line.isBlank()) {
        return;
      }
      if (limit != null && Long.parseLong(line.substring(0, line.indexOf(','))) >= limit) {
        return;
      }
      out.output(example.parse(line));
    }
  }

  /**
   * Each checked output (and the id and model id) of a prediction as JSON, as the reference has
   * them.
   */
  public static ObjectNode toJson(Row prediction, List<String> outputs) {
    ObjectNode node = JSON.createObjectNode();
    node.put("id", prediction.getInt64("id"));
    for (String output : outputs) {
      node.set(output, JSON.valueToTree(prediction.getValue(output)));
    }
    node.put(RunInference.MODEL_ID_FIELD, prediction.getString(RunInference.MODEL_ID_FIELD));
    return node;
  }

  private static String failureJson(Row failure) {
    ObjectNode node = JSON.createObjectNode();
    Row input = failure.getRow(RunInference.INPUT_FIELD);
    node.put("id", input == null ? null : input.getInt64("id"));
    node.put("stage", failure.getString(RunInference.STAGE_FIELD));
    node.put("error", failure.getString(RunInference.ERROR_MESSAGE_FIELD));
    return node.toString();
  }

  /**
   * Where {@code actual} (a prediction as {@link #toJson} makes it) differs from the plain-Python
   * {@code expected}: strings and integers exactly, floating point to float32 rounding; empty when
   * they agree.
   */
  public static List<String> differences(
      Example example, @Nullable JsonNode expected, JsonNode actual) {
    List<String> out = new ArrayList<>();
    long id = actual.get("id").asLong();
    if (expected == null) {
      out.add("id " + id + ": no such record in the reference");
      return out;
    }
    if (!example.modelId().equals(actual.path(RunInference.MODEL_ID_FIELD).asText())) {
      out.add("id " + id + ": model_id " + actual.get(RunInference.MODEL_ID_FIELD));
    }
    for (String output : example.checked) {
      compare("id " + id + " " + output, expected.get(output), actual.get(output), out);
    }
    return out;
  }

  private static void compare(
      String what, @Nullable JsonNode expected, @Nullable JsonNode actual, List<String> out) {
    if (expected == null || actual == null || actual.isNull()) {
      out.add(what + ": " + actual + " but plain Python gave " + expected);
    } else if (expected.isArray()) {
      if (!actual.isArray() || actual.size() != expected.size()) {
        out.add(what + ": " + actual + " but plain Python gave " + expected);
        return;
      }
      for (int i = 0; i < expected.size(); i++) {
        compare(what + "[" + i + "]", expected.get(i), actual.get(i), out);
      }
    } else if (expected.isTextual() || expected.isIntegralNumber()) {
      if (!expected.asText().equals(actual.asText())) {
        out.add(what + ": " + actual + " but plain Python gave " + expected);
      }
    } else {
      double want = expected.asDouble();
      double got = actual.asDouble();
      if (!(Math.abs(want - got) <= 1e-5 + 1e-5 * Math.abs(want))) {
        out.add(what + ": " + got + " but plain Python gave " + want);
      }
    }
  }

  /** The run's one-line summary, from its output files. */
  static String summarize(
      Example example, Path models, String output, long records, double seconds, String runner) {
    Map<Long, JsonNode> reference = example.reference(models);
    long predictions = 0;
    long matching = 0;
    List<String> firstDifferences = new ArrayList<>();
    for (String line : shardLines(output + "-predictions")) {
      predictions++;
      try {
        JsonNode prediction = JSON.readTree(line);
        List<String> differences =
            differences(example, reference.get(prediction.get("id").asLong()), prediction);
        if (differences.isEmpty()) {
          matching++;
        } else if (firstDifferences.size() < 3) {
          firstDifferences.add(differences.get(0));
        }
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
    long failed = shardLines(output + "-failures").size();
    StringBuilder summary =
        new StringBuilder(
            String.format(
                Locale.ROOT,
                "records=%d predictions=%d failed=%d matching_plain_python=%d throughput=%.0f/s "
                    + "runner=%s mode=batch model=%s",
                records,
                predictions,
                failed,
                matching,
                predictions / seconds,
                runner,
                example.demoName));
    for (String difference : firstDifferences) {
      summary.append(System.lineSeparator()).append("  differs: ").append(difference);
    }
    if (predictions + failed != records) {
      summary
          .append(System.lineSeparator())
          .append("  ")
          .append(records - predictions - failed)
          .append(" records got neither a prediction nor a failure");
    }
    return summary.toString();
  }

  private static List<String> shardLines(String prefix) {
    List<String> lines = new ArrayList<>();
    for (Path shard : Launcher.outputShards(prefix)) {
      lines.addAll(allLines(shard));
    }
    lines.removeIf(String::isBlank);
    return lines;
  }

  private static List<String> allLines(Path file) {
    try {
      return Files.readAllLines(file, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException(
          "cannot read " + file + " (./xinfer setup writes the example models and their data)", e);
    }
  }

  /** A line of the example's data set as its Row: the Row's schema says how the line reads. */
  private static Row parse(Example example, String line) {
    if (example.schema == PATIENT) {
      // id,target,f0..f9
      String[] cells = line.split(",");
      List<Double> features = new ArrayList<>();
      for (int i = 2; i < cells.length; i++) {
        features.add(Double.parseDouble(cells[i]));
      }
      return Row.withSchema(PATIENT)
          .addValues(Long.parseLong(cells[0]), Double.parseDouble(cells[1]), features)
          .build();
    }
    if (example.schema == PHRASE) {
      // id,phrase,rating,label: the phrase may hold commas (CSV-quoted).
      int first = line.indexOf(',');
      int last = line.lastIndexOf(',');
      int third = line.lastIndexOf(',', last - 1);
      String phrase = line.substring(first + 1, third);
      if (phrase.startsWith("\"") && phrase.endsWith("\"")) {
        phrase = phrase.substring(1, phrase.length() - 1).replace("\"\"", "\"");
      }
      return Row.withSchema(PHRASE)
          .addValues(Long.parseLong(line.substring(0, first)), line.substring(last + 1), phrase)
          .build();
    }
    // A digit: id,label,p0..p63.
    String[] cells = line.split(",");
    long id = Long.parseLong(cells[0]);
    long label = Long.parseLong(cells[1]);
    List<Float> pixels = new ArrayList<>(64);
    for (int i = 2; i < cells.length; i++) {
      pixels.add(Float.parseFloat(cells[i]));
    }
    if (example.schema == EXAMPLE) {
      return Row.withSchema(EXAMPLE).addValues(id, label, pixels).build();
    }
    if (example.schema == PNG) {
      return Row.withSchema(PNG).addValues(id, label, png(pixels)).build();
    }
    List<List<Float>> grid = new ArrayList<>();
    long inked = 0;
    for (int r = 0; r < 8; r++) {
      grid.add(new ArrayList<>(pixels.subList(8 * r, 8 * r + 8)));
    }
    for (float v : pixels) {
      inked += v > 0 ? 1 : 0;
    }
    return Row.withSchema(DIGIT).addValues(id, label, pixels, grid, inked).build();
  }

  private static byte[] png(List<Float> pixels) {
    BufferedImage image = new BufferedImage(8, 8, BufferedImage.TYPE_BYTE_GRAY);
    for (int i = 0; i < pixels.size(); i++) {
      image.getRaster().setSample(i % 8, i / 8, 0, Math.round(pixels.get(i)));
    }
    ByteArrayOutputStream png = new ByteArrayOutputStream();
    try {
      ImageIO.write(image, "png", png);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return png.toByteArray();
  }
}
