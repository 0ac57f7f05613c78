package dev.xinfer.pipelines;

import dev.xinfer.runtime.RunnerBootstrap;
import dev.xinfer.runtime.XinferOptions;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.BiFunction;
import java.util.stream.Stream;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.Validation;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Runs an example pipeline and prints the one-line summary scripts parse:
 *
 * <pre>
 * records=1797 failed=0 accuracy=0.97 throughput=2410/s runner=FlinkRunner mode=batch model=digits-mlp
 * </pre>
 *
 * <p>Pipelines read labelled CSV ({@code id,label,...}) and write predictions as CSV ({@code
 * id,label,predicted_class,model_id,...}); the summary is computed from those files after the run.
 * Bad flags and unsupported runners end with one message on stderr and exit code 2; a failed run
 * with exit code 1.
 */
public final class Launcher {
  /** Options every example pipeline shares. */
  public interface Options extends XinferOptions {
    @Description("CSV of labelled examples: a header, then id,label,features... per line.")
    @Validation.Required
    String getInput();

    void setInput(String value);

    @Description("Output path prefix; predictions go to PREFIX-SSSSS-of-NNNNN.csv.")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description("The model: a TensorFlow SavedModel directory or .keras file.")
    @Validation.Required
    String getModelUri();

    void setModelUri(String value);

    @Description("The id each prediction carries; default: the model's file name.")
    @Nullable String getModelId();

    void setModelId(String value);
  }

  /** What a run did, read back from its input and output files. */
  public static final class Summary {
    public final long records;
    public final long predictions;
    public final long correct;
    public final double seconds;
    public final String runner;
    public final String mode;
    public final String model;

    Summary(
        long records,
        long predictions,
        long correct,
        double seconds,
        String runner,
        String mode,
        String model) {
      this.records = records;
      this.predictions = predictions;
      this.correct = correct;
      this.seconds = seconds;
      this.runner = runner;
      this.mode = mode;
      this.model = model;
    }

    public long failed() {
      return records - predictions;
    }

    public double accuracy() {
      return predictions == 0 ? 0 : (double) correct / predictions;
    }

    @Override
    public String toString() {
      return String.format(
          Locale.ROOT,
          "records=%d failed=%d accuracy=%.3f throughput=%.0f/s runner=%s mode=%s model=%s",
          records,
          failed(),
          accuracy(),
          seconds > 0 ? records / seconds : 0.0,
          runner,
          mode,
          model);
    }
  }

  private Launcher() {}

  /** Parses {@code args}, builds and runs the pipeline, prints the summary; exits on error. */
  public static <T extends Options> void launch(
      String[] args, Class<T> optionsClass, BiFunction<Pipeline, T, Pipeline> build) {
    // The embedded Java SDK harness replays its teardown through java.util.logging at
    // SEVERE after every job; the run's own failures reach the user as exceptions.
    java.util.logging.Logger.getLogger("").setLevel(java.util.logging.Level.OFF);
    try {
      System.out.println(run(args, optionsClass, build));
    } catch (IllegalArgumentException e) {
      System.err.println("xinfer: " + e.getMessage());
      System.exit(2);
    } catch (Pipeline.PipelineExecutionException e) {
      System.err.println("xinfer: " + (e.getCause() == null ? e : e.getCause()).getMessage());
      System.exit(1);
    } catch (IllegalStateException e) {
      System.err.println("xinfer: " + e.getMessage());
      System.exit(1);
    }
    System.exit(0);
  }

  /** Runs the pipeline to the end and returns its summary. */
  public static <T extends Options> Summary run(
      String[] args, Class<T> optionsClass, BiFunction<Pipeline, T, Pipeline> build) {
    String[] withRunner = withDefaultRunner(args);
    for (String arg : withRunner) {
      if (arg.startsWith("--runner=")) {
        RunnerBootstrap.checkSupported(arg.substring("--runner=".length()));
      }
    }
    T options = PipelineOptionsFactory.fromArgs(withRunner).withValidation().as(optionsClass);
    String runner = options.getRunner().getSimpleName();
    Pipeline pipeline = build.apply(Pipeline.create(options), options);
    long start = System.nanoTime();
    pipeline.run().waitUntilFinish();
    double seconds = (System.nanoTime() - start) / 1e9;
    String requested = options.getXinferRequestedRunner();
    return summarize(
        Paths.get(options.getInput()),
        options.getOutput(),
        seconds,
        requested != null ? requested : runner,
        "batch",
        options.getModelId() != null
            ? options.getModelId()
            : Paths.get(options.getModelUri()).getFileName().toString());
  }

  private static String[] withDefaultRunner(String[] args) {
    for (String arg : args) {
      if (arg.startsWith("--runner=")) {
        return args;
      }
    }
    String[] out = new String[args.length + 1];
    System.arraycopy(args, 0, out, 0, args.length);
    out[args.length] = "--runner=FlinkRunner";
    return out;
  }

  /** Counts input records and reads every prediction shard written under {@code outputPrefix}. */
  public static Summary summarize(
      Path input, String outputPrefix, double seconds, String runner, String mode, String model) {
    long records;
    try (Stream<String> lines = Files.lines(input, StandardCharsets.UTF_8)) {
      records = lines.filter(l -> !l.startsWith("id,") && !l.isBlank()).count();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    long predictions = 0;
    long correct = 0;
    for (Path shard : outputShards(outputPrefix)) {
      try (Stream<String> lines = Files.lines(shard, StandardCharsets.UTF_8)) {
        for (String line : (Iterable<String>) lines::iterator) {
          if (line.isBlank()) {
            continue;
          }
          String[] cells = line.split(",", 4);
          predictions++;
          if (cells[1].equals(cells[2])) {
            correct++;
          }
        }
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
    return new Summary(records, predictions, correct, seconds, runner, mode, model);
  }

  /** The files TextIO wrote for {@code outputPrefix} ({@code PREFIX-SSSSS-of-NNNNN.csv}). */
  public static List<Path> outputShards(String outputPrefix) {
    Path prefix = Paths.get(outputPrefix).toAbsolutePath();
    List<Path> shards = new ArrayList<>();
    try (DirectoryStream<Path> dir =
        Files.newDirectoryStream(prefix.getParent(), prefix.getFileName() + "-*-of-*")) {
      dir.forEach(shards::add);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    shards.sort(null);
    return shards;
  }
}
