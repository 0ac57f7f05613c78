package dev.xinfer.pipelines;

import dev.xinfer.Model;
import dev.xinfer.RunInference;
import dev.xinfer.kafka.KafkaExactlyOnceWrite;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.NullableCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.coders.VarLongCoder;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.Filter;
import org.apache.beam.sdk.transforms.Flatten;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.Reshuffle;
import org.apache.beam.sdk.transforms.Values;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionList;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.PDone;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TupleTag;
import org.apache.beam.sdk.values.TupleTagList;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.LongSerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The demo's pipeline: labelled handwritten digits classified by a TensorFlow model running in
 * Python. The same code runs in batch and in streaming mode ({@code --streaming}):
 *
 * <pre>
 * batch:     CSV file    -> parse to Row(id, label, features) -> RunInference -> format -> CSV files
 * streaming: Kafka topic -> parse to Row(id, label, features) -> RunInference -> format -> Kafka topic
 *                              \-> unparsable ---------------------\-> failed -> dead-letter topic
 * </pre>
 *
 * <p>Input lines (file lines or Kafka values) are {@code id,label,p0,...,p63}; output lines are
 * {@code id,label,predicted_class,model_id,s0,...,s9} (Kafka: keyed by id). In streaming, a record
 * that gets no prediction (a value that does not parse, a wrong number of pixels, a model error)
 * goes to the dead-letter topic as JSON with the reason, so every record in is a prediction or a
 * dead letter; on Flink with checkpoints, both topics are written exactly once ({@link
 * KafkaExactlyOnceWrite}; {@code --exactlyOnce=false} writes at least once).
 */
public final class DigitsPipeline {
  private static final Logger LOG = LoggerFactory.getLogger(DigitsPipeline.class);

  /** Options of the digits pipeline. */
  public interface Options extends Launcher.Options {
    @Description(
        "Model refresh: seconds between looks for a newer version, with --modelUri a glob pattern"
            + " of versions (e.g. /models/digits/v*); unset: no refresh.")
    @Nullable Integer getModelRefreshSeconds();

    void setModelRefreshSeconds(@Nullable Integer value);

    @Description("Largest batch handed to the model.")
    @Default.Integer(256)
    int getMaxBatchSize();

    void setMaxBatchSize(int value);

    @Description(
        "A Python function (module:function) applied to each example Row before the model, e.g. "
            + "xinfer.examples.hooks:parse_pixels; its module must be allowed "
            + "(--xinferAllowedModules) unless it is in xinfer.examples.")
    @Nullable String getPreprocess();

    void setPreprocess(String value);
  }

  public static final Schema EXAMPLE_SCHEMA =
      Schema.builder()
          .addInt64Field("id")
          .addInt64Field("label")
          .addArrayField("features", FieldType.FLOAT)
          .build();

  /** The keys the batch pipeline spreads its examples over: many more than a job's tasks. */
  static final int SPREAD_KEYS = 64;

  private DigitsPipeline() {}

  public static void main(String[] args) {
    Launcher.launch(args, Options.class, DigitsPipeline::build);
  }

  /** Wires the whole pipeline: examples in, predictions out, from files or Kafka by mode. */
  public static Pipeline build(Pipeline pipeline, Options options) {
    boolean streaming = options.as(StreamingOptions.class).isStreaming();
    if (!streaming) {
      pipeline
          .apply("ReadExamples", TextIO.read().from(options.getInput()))
          .apply("ParseExamples", new ParseExamples())
          // One task reads a small file; spread its examples over the job's parallel tasks, so
          // that every slot of every node runs inference. Over a fixed number of keys: with a key
          // per example, the DirectRunner made each example a bundle of its own, and each bundle
          // costs it a round trip to the Python worker and a translation of the stage (1,797
          // examples took it 110-170 s; CleanOutputIT's 240 s bound was once overrun).
          .apply("Spread", Reshuffle.<Row>viaRandomKey().withNumBuckets(SPREAD_KEYS))
          .apply("Predict", predict(options))
          .apply("Format", MapElements.into(TypeDescriptors.strings()).via(DigitsPipeline::format))
          .apply("WritePredictions", TextIO.write().to(options.getOutput()).withSuffix(".csv"));
      return pipeline;
    }
    boolean exactlyOnce = exactlyOnce(options);
    KafkaIO.Read<Long, String> read =
        KafkaIO.<Long, String>read()
            .withBootstrapServers(options.getBootstrapServers())
            .withTopic(options.getInputTopic())
            .withKeyDeserializer(LongDeserializer.class)
            .withValueDeserializer(StringDeserializer.class)
            .withConsumerConfigUpdates(
                Map.of(
                    "auto.offset.reset",
                    "earliest",
                    // Offsets are committed with each completed checkpoint, so a new run of the
                    // job resumes where the last one's output was committed.
                    "group.id",
                    "xinfer-digits-" + options.getInputTopic()))
            .withReadCommitted()
            // Each example's timestamp is when the source read it (KafkaIO's default, said
            // here because the at-least-once sink publishes it: see write).
            .withProcessingTime();
    if (exactlyOnce) {
      // Only with Flink's checkpoints: the offsets commit after the output has. Without them (at
      // least once, Spark) committing at finalization would skip records whose predictions were
      // not yet written when the job died (Spark, measured: 1,679 of 3,314 lost; README
      // "Reliability"), so a new run reads the topic again from the start.
      read = read.commitOffsetsInFinalize();
    }
    PCollectionTuple parsed =
        pipeline
            .apply("ReadExamples", read.withoutMetadata())
            .apply("Lines", Values.create())
            .apply(
                "ParseExamples",
                ParDo.of(new ParseOrDeadLetter())
                    .withOutputTags(EXAMPLES, TupleTagList.of(UNPARSABLE)));
    WithFailures.Result<PCollection<Row>, Row> predicted =
        parsed
            .get(EXAMPLES)
            .setRowSchema(EXAMPLE_SCHEMA)
            .apply("Predict", predict(options).withFailures());
    predicted
        .output()
        .apply(
            "Format",
            MapElements.into(
                    TypeDescriptors.kvs(TypeDescriptors.longs(), TypeDescriptors.strings()))
                .via(row -> KV.of(row.getInt64("id"), format(row))))
        .apply("WritePredictions", write(options, options.getOutputTopic(), exactlyOnce));
    PCollection<KV<Long, String>> modelFailures =
        predicted
            .failures()
            .apply(
                "FormatFailures",
                MapElements.into(
                        TypeDescriptors.kvs(TypeDescriptors.longs(), TypeDescriptors.strings()))
                    .via(DigitsPipeline::deadLetter));
    PCollectionList.of(parsed.get(UNPARSABLE).setCoder(DEAD_LETTER_CODER))
        .and(modelFailures)
        .apply("DeadLetters", Flatten.pCollections())
        .apply("WriteDeadLetters", write(options, options.getDeadLetterTopic(), exactlyOnce));
    return pipeline;
  }

  private static final TupleTag<Row> EXAMPLES = new TupleTag<Row>() {};
  private static final TupleTag<KV<Long, String>> UNPARSABLE = new TupleTag<KV<Long, String>>() {};
  private static final KvCoder<Long, String> DEAD_LETTER_CODER =
      KvCoder.of(NullableCoder.of(VarLongCoder.of()), StringUtf8Coder.of());

  /**
   * Whether this run writes exactly once. Unset, it does where the runner replays a stage's input
   * as it was after a failure ({@code @RequiresStableInput}: Flink) and checkpoints are on; set, it
   * fails when Flink has no checkpoints to commit with and warns on Spark, which cannot.
   */
  static boolean exactlyOnce(Options options) {
    Boolean requestedOnce = options.getExactlyOnce();
    if (Boolean.FALSE.equals(requestedOnce)) {
      return false;
    }
    boolean asked = Boolean.TRUE.equals(requestedOnce);
    String runner = options.getRunner().getSimpleName();
    String requested = options.getXinferRequestedRunner();
    boolean flink = "FlinkRunner".equals(runner) || "FlinkRunner".equals(requested);
    boolean spark = "SparkRunner".equals(runner) || "SparkRunner".equals(requested);
    if (!flink) {
      if (asked && spark) {
        LOG.warn(
            "xinfer: --exactlyOnce: Beam's Spark runner cannot write to Kafka exactly once (it "
                + "does not replay a stage's input as it was after a failure); writing at least "
                + "once. Pass --exactlyOnce=false to silence this.");
      } else if (asked) {
        LOG.warn(
            "xinfer: --exactlyOnce needs the FlinkRunner (checkpoints and stable input); {} "
                + "writes at least once.",
            runner);
      }
      return false;
    }
    if (options.as(FlinkPipelineOptions.class).getCheckpointingInterval() <= 0) {
      if (asked) {
        throw new IllegalArgumentException(
            "--exactlyOnce commits Kafka transactions with Flink's checkpoints, but "
                + "checkpoints are off: pass --checkpointingInterval=MILLIS (the local-flink "
                + "profile sets 1000), or --exactlyOnce=false to write at least once.");
      }
      LOG.warn(
          "xinfer: Flink checkpoints are off (no --checkpointingInterval): writing to Kafka at "
              + "least once, and a new run reads the input topic again from its start (offsets "
              + "commit only with checkpoints).");
      return false;
    }
    return true;
  }

  private static PTransform<PCollection<KV<Long, String>>, PDone> write(
      Options options, String topic, boolean exactlyOnce) {
    if (exactlyOnce) {
      // The sink group is the topic's, so a run restored from the job's checkpoint goes on from
      // the positions committed with its transactions.
      return KafkaExactlyOnceWrite.<Long, String>write()
          .withBootstrapServers(options.getBootstrapServers())
          .withTopic(topic)
          .withKeySerializer(LongSerializer.class)
          .withValueSerializer(StringSerializer.class)
          .withSinkGroupId("xinfer-digits-" + topic);
    }
    // Each output record carries its example's timestamp, the time the source read it, so a
    // reader can tell the time before the pipeline from the time in it (the launcher's latency
    // file: read_ms).
    return KafkaIO.<Long, String>write()
        .withBootstrapServers(options.getBootstrapServers())
        .withTopic(topic)
        .withKeySerializer(LongSerializer.class)
        .withValueSerializer(StringSerializer.class)
        .withInputTimestamp();
  }

  /** The inference step alone, for tests that bring their own rows. */
  public static RunInference predict(Options options) {
    Model model = Model.of(options.getModelUri());
    if (options.getModelId() != null) {
      model = model.withId(options.getModelId());
    }
    RunInference inference =
        RunInference.withModel(model)
            .withFeatureField("features")
            .withMaxBatchSize(options.getMaxBatchSize());
    if (options.getModelRefreshSeconds() != null) {
      inference =
          inference.withModelRefresh(
              java.time.Duration.ofSeconds(options.getModelRefreshSeconds()));
    }
    return options.getPreprocess() == null
        ? inference
        : inference.withPreprocess(options.getPreprocess());
  }

  /** CSV lines to example Rows; the header line is skipped. */
  public static final class ParseExamples
      extends PTransform<PCollection<String>, PCollection<Row>> {
    @Override
    public PCollection<Row> expand(PCollection<String> lines) {
      return lines
          .apply(
              "SkipHeader", Filter.by((String line) -> !line.startsWith("id,") && !line.isBlank()))
          .apply("ToRow", MapElements.into(TypeDescriptors.rows()).via(DigitsPipeline::parse))
          .setRowSchema(EXAMPLE_SCHEMA);
    }
  }

  /**
   * Kafka values to example Rows; a value that is not one ({@code null}, a line that does not
   * parse) goes to the dead letters with the reason, keyed by its id when it has one.
   */
  static final class ParseOrDeadLetter extends DoFn<String, Row> {
    @ProcessElement
    public void process(@Element @Nullable String line, MultiOutputReceiver out) {
      if (line == null) {
        out.get(UNPARSABLE)
            .output(
                KV.of(
                    null,
                    deadLetter(
                        null, "parsing", "NullValue", "the Kafka record has no value", null)));
        return;
      }
      try {
        out.get(EXAMPLES).output(parse(line));
      } catch (RuntimeException e) {
        Long id = leadingId(line);
        out.get(UNPARSABLE)
            .output(
                KV.of(
                    id,
                    deadLetter(id, "parsing", e.getClass().getSimpleName(), e.getMessage(), line)));
      }
    }
  }

  private static @Nullable Long leadingId(String line) {
    int comma = line.indexOf(',');
    try {
      return Long.parseLong((comma < 0 ? line : line.substring(0, comma)).trim());
    } catch (NumberFormatException e) {
      return null;
    }
  }

  /** A RunInference failure as a dead letter keyed by the record's id. */
  static KV<Long, String> deadLetter(Row failure) {
    Row input = failure.getRow(RunInference.INPUT_FIELD);
    Long id = input.getInt64("id");
    StringBuilder record =
        new StringBuilder().append(id).append(',').append(input.getInt64("label"));
    Iterable<Object> features = input.getArray("features");
    if (features != null) {
      for (Object value : features) {
        record.append(',').append(value);
      }
    }
    return KV.of(
        id,
        deadLetter(
            id,
            failure.getString(RunInference.STAGE_FIELD),
            failure.getString(RunInference.ERROR_TYPE_FIELD),
            failure.getString(RunInference.ERROR_MESSAGE_FIELD),
            record.toString()));
  }

  /**
   * A dead letter as one JSON object: {@code {"id":..,"stage":..,"error_type":..,"error":..,
   * "record":..}} ({@code id} and {@code record} null when the record had none).
   */
  static String deadLetter(
      @Nullable Long id,
      String stage,
      String errorType,
      @Nullable String message,
      @Nullable String record) {
    return "{\"id\":"
        + id
        + ",\"stage\":"
        + json(stage)
        + ",\"error_type\":"
        + json(errorType)
        + ",\"error\":"
        + json(message)
        + ",\"record\":"
        + json(record == null ? null : abbreviate(record, 2000))
        + "}";
  }

  private static String json(@Nullable String text) {
    if (text == null) {
      return "null";
    }
    StringBuilder out = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }

  /**
   * One CSV line to a Row; fails naming the line, the field and the bad value. The line is read in
   * one pass, each pixel parsed where it stands (no cell strings, no trimmed copies): at 18,000
   * records/s splitting and trimming the cells was 12% of the streaming job's CPU (JFR).
   */
  public static Row parse(String line) {
    int commas = 0;
    for (int comma = line.indexOf(','); comma >= 0; comma = line.indexOf(',', comma + 1)) {
      commas++;
    }
    if (commas < 2) {
      throw new IllegalArgumentException(
          String.format(
              "Input line '%s' has %d cells; expected id,label,p0,...",
              abbreviate(line), commas + 1));
    }
    int idEnd = line.indexOf(',');
    int labelEnd = line.indexOf(',', idEnd + 1);
    long id = parseLong(line.substring(0, idEnd), "id", line);
    long label = parseLong(line.substring(idEnd + 1, labelEnd), "label", line);
    List<Float> features = new ArrayList<>(commas - 1);
    int start = labelEnd + 1;
    for (int column = 3; column <= commas + 1; column++) {
      int comma = line.indexOf(',', start);
      int end = comma < 0 ? line.length() : comma;
      // As String.trim: whitespace and control characters at either end are not the value's.
      int from = start;
      int to = end;
      while (from < to && line.charAt(from) <= ' ') {
        from++;
      }
      while (to > from && line.charAt(to - 1) <= ' ') {
        to--;
      }
      try {
        features.add(parseFloat(line, from, to));
      } catch (NumberFormatException e) {
        throw new IllegalArgumentException(
            String.format(
                "Record id=%d: field 'features' value %d ('%s', column %d) is not a number; "
                    + "every pixel must be numeric",
                id, column - 3, line.substring(from, to), column),
            e);
      }
      start = end + 1;
    }
    // Values of the schema's types, made here: no need for Row's check of each one.
    return Row.withSchema(EXAMPLE_SCHEMA).attachValues(id, label, features);
  }

  private static final float[] POWERS_OF_TEN = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f, 1e6f, 1e7f};

  /**
   * {@link Float#parseFloat}, with a fast path for plain decimals of up to 7 digits ({@code 13.0},
   * {@code 0.25}): the digits and the power of ten are exact floats, so one float division is
   * rounded once, as parseFloat rounds (Clinger's fast path). At 20,000 records/s parseFloat was
   * the largest part of parsing (JFR).
   */
  static float parseFloat(String cell) {
    return parseFloat(cell, 0, cell.length());
  }

  /** {@link #parseFloat(String)} of {@code line}'s characters {@code from} to {@code to}. */
  static float parseFloat(String line, int from, int to) {
    int digits = 0;
    int decimals = -1; // digits after the point, once one is seen
    int mantissa = 0;
    for (int i = from; i < to; i++) {
      char c = line.charAt(i);
      if (c >= '0' && c <= '9') {
        if (++digits > 7) {
          return Float.parseFloat(line.substring(from, to));
        }
        mantissa = mantissa * 10 + (c - '0');
        if (decimals >= 0) {
          decimals++;
        }
      } else if (c == '.' && decimals < 0) {
        decimals = 0;
      } else {
        // A sign, an exponent, NaN, or not a number.
        return Float.parseFloat(line.substring(from, to));
      }
    }
    if (digits == 0) {
      return Float.parseFloat(line.substring(from, to)); // "", ".": parseFloat's error
    }
    return decimals <= 0 ? (float) mantissa : mantissa / POWERS_OF_TEN[decimals];
  }

  private static long parseLong(String cell, String field, String line) {
    try {
      return Long.parseLong(cell.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          String.format(
              "Input line '%s': field '%s' is '%s', not a whole number",
              abbreviate(line), field, cell),
          e);
    }
  }

  private static String abbreviate(String line) {
    return abbreviate(line, 60);
  }

  private static String abbreviate(String line, int length) {
    return line.length() <= length ? line : line.substring(0, length) + "...";
  }

  /** A prediction Row as {@code id,label,predicted_class,model_id,s0,...}. */
  static String format(Row prediction) {
    StringBuilder out =
        new StringBuilder()
            .append(prediction.getInt64("id"))
            .append(',')
            .append(prediction.getInt64("label"))
            .append(',')
            .append(prediction.getInt64(RunInference.PREDICTED_CLASS_FIELD))
            .append(',')
            .append(prediction.getString(RunInference.MODEL_ID_FIELD));
    for (Object score : prediction.getArray(RunInference.SCORES_FIELD)) {
      out.append(',').append(score);
    }
    return out.toString();
  }
}
