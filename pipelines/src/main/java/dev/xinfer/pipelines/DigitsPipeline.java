package dev.xinfer.pipelines;

import dev.xinfer.Model;
import dev.xinfer.RunInference;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.Filter;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.Values;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.LongSerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The demo's pipeline: labelled handwritten digits classified by a TensorFlow model running in
 * Python. The same code runs in batch and in streaming mode ({@code --streaming}):
 *
 * <pre>
 * batch:     CSV file    -> parse to Row(id, label, features) -> RunInference -> format -> CSV files
 * streaming: Kafka topic -> parse to Row(id, label, features) -> RunInference -> format -> Kafka topic
 * </pre>
 *
 * <p>Input lines (file lines or Kafka values) are {@code id,label,p0,...,p63}; output lines are
 * {@code id,label,predicted_class,model_id,s0,...,s9} (Kafka: keyed by id).
 */
public final class DigitsPipeline {
  /** Options of the digits pipeline. */
  public interface Options extends Launcher.Options {
    @Description("Largest batch handed to the model.")
    @Default.Integer(256)
    int getMaxBatchSize();

    void setMaxBatchSize(int value);
  }

  public static final Schema EXAMPLE_SCHEMA =
      Schema.builder()
          .addInt64Field("id")
          .addInt64Field("label")
          .addArrayField("features", FieldType.FLOAT)
          .build();

  private DigitsPipeline() {}

  public static void main(String[] args) {
    Launcher.launch(args, Options.class, DigitsPipeline::build);
  }

  /** Wires the whole pipeline: examples in, predictions out, from files or Kafka by mode. */
  public static Pipeline build(Pipeline pipeline, Options options) {
    boolean streaming = options.as(StreamingOptions.class).isStreaming();
    PCollection<String> lines =
        streaming
            ? pipeline
                .apply(
                    "ReadExamples",
                    KafkaIO.<Long, String>read()
                        .withBootstrapServers(options.getBootstrapServers())
                        .withTopic(options.getInputTopic())
                        .withKeyDeserializer(LongDeserializer.class)
                        .withValueDeserializer(StringDeserializer.class)
                        .withConsumerConfigUpdates(Map.of("auto.offset.reset", "earliest"))
                        .withoutMetadata())
                .apply("Lines", Values.create())
            : pipeline.apply("ReadExamples", TextIO.read().from(options.getInput()));
    PCollection<Row> predictions =
        lines.apply("ParseExamples", new ParseExamples()).apply("Predict", predict(options));
    if (streaming) {
      predictions
          .apply(
              "Format",
              MapElements.into(
                      TypeDescriptors.kvs(TypeDescriptors.longs(), TypeDescriptors.strings()))
                  .via(row -> KV.of(row.getInt64("id"), format(row))))
          .apply(
              "WritePredictions",
              KafkaIO.<Long, String>write()
                  .withBootstrapServers(options.getBootstrapServers())
                  .withTopic(options.getOutputTopic())
                  .withKeySerializer(LongSerializer.class)
                  .withValueSerializer(StringSerializer.class));
    } else {
      predictions
          .apply("Format", MapElements.into(TypeDescriptors.strings()).via(DigitsPipeline::format))
          .apply("WritePredictions", TextIO.write().to(options.getOutput()).withSuffix(".csv"));
    }
    return pipeline;
  }

  /** The inference step alone, for tests that bring their own rows. */
  public static RunInference predict(Options options) {
    Model model = Model.of(options.getModelUri());
    if (options.getModelId() != null) {
      model = model.withId(options.getModelId());
    }
    return RunInference.withModel(model)
        .withFeatureField("features")
        .withMaxBatchSize(options.getMaxBatchSize());
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

  /** One CSV line to a Row; fails naming the line, the field and the bad value. */
  public static Row parse(String line) {
    String[] cells = line.split(",", -1);
    if (cells.length < 3) {
      throw new IllegalArgumentException(
          String.format(
              "Input line '%s' has %d cells; expected id,label,p0,...",
              abbreviate(line), cells.length));
    }
    long id = parseLong(cells[0], "id", line);
    long label = parseLong(cells[1], "label", line);
    List<Float> features = new ArrayList<>(cells.length - 2);
    for (int i = 2; i < cells.length; i++) {
      String cell = cells[i].trim();
      try {
        features.add(Float.parseFloat(cell));
      } catch (NumberFormatException e) {
        throw new IllegalArgumentException(
            String.format(
                "Record id=%d: field 'features' value %d ('%s', column %d) is not a number; "
                    + "every pixel must be numeric",
                id, i - 2, cell, i + 1),
            e);
      }
    }
    return Row.withSchema(EXAMPLE_SCHEMA).addValues(id, label, features).build();
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
    return line.length() <= 60 ? line : line.substring(0, 60) + "...";
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
