package dev.xinfer.pipelines.bench;

import dev.xinfer.RunInference;
import dev.xinfer.XinferOptions;
import dev.xinfer.pipelines.DigitsPipeline;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Collectors;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.Row;

/**
 * Benchmark (not a test): wall time of the same 100-record RunInference pipeline on the
 * DirectRunner and on the embedded portable Flink, alternating in one JVM with the same Python
 * services, after one warm-up run each. Prints each run, the medians and their ratio.
 *
 * <pre>
 * ./xinfer bench direct        (or: DirectVsFlink DATA_CSV MODEL_DIR [REPEATS])
 * </pre>
 */
public final class DirectVsFlink {
  private static final int RECORDS = 100;

  private DirectVsFlink() {}

  public static void main(String[] args) throws IOException {
    String data = args[0];
    String model = args[1];
    int repeats = args.length > 2 ? Integer.parseInt(args[2]) : 5;
    List<Row> rows =
        Files.readAllLines(Paths.get(data), StandardCharsets.UTF_8).stream()
            .filter(l -> !l.startsWith("id,"))
            .limit(RECORDS)
            .map(DigitsPipeline::parse)
            .collect(Collectors.toList());
    String[] runners = {"DirectRunner", "FlinkRunner"};
    for (String runner : runners) {
      time(runner, rows, model); // warm-up: Python services, SDK worker, model load
    }
    double[][] seconds = new double[runners.length][repeats];
    for (int i = 0; i < repeats; i++) {
      for (int r = 0; r < runners.length; r++) {
        seconds[r][i] = time(runners[r], rows, model);
        System.out.printf(Locale.ROOT, "run %d %-12s %.2f s%n", i + 1, runners[r], seconds[r][i]);
      }
    }
    double direct = median(seconds[0]);
    double flink = median(seconds[1]);
    System.out.printf(
        Locale.ROOT,
        "records=%d repeats=%d direct_median_s=%.2f flink_median_s=%.2f direct_to_flink=%.2f%n",
        RECORDS,
        repeats,
        direct,
        flink,
        direct / flink);
    System.exit(0);
  }

  private static double time(String runner, List<Row> rows, String model) {
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs("--runner=" + runner, "--parallelism=1").create();
    options.as(XinferOptions.class).setXinferPython(System.getenv("XINFER_PYTHON"));
    Pipeline p = Pipeline.create(options);
    p.apply(Create.of(rows).withRowSchema(DigitsPipeline.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(model))
        .apply(Count.globally());
    long start = System.nanoTime();
    p.run().waitUntilFinish();
    return (System.nanoTime() - start) / 1e9;
  }

  private static double median(double[] values) {
    double[] sorted = values.clone();
    Arrays.sort(sorted);
    int n = sorted.length;
    return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  }
}
