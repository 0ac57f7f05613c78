package dev.xinfer.pipelines.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import dev.xinfer.RunInference;
import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.RunnerBootstrap;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.BiConsumer;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.GenerateSequence;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.GlobalWindow;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Duration;
import org.joda.time.Instant;

/**
 * Benchmark (not a test): one or more approaches, one model, one batch size; prints a CSV line per
 * approach.
 *
 * <pre>
 * Bench APPROACH[,APPROACH...] MODEL.onnx BATCH_SIZE ROWS[,ROWS...] PYTHON
 *   APPROACH: xinfer-flink | xinfer-flink-p2 | xinfer-flink-rows | xinfer-spark | xinfer-direct
 *             | onnxruntime-java | microservice
 *             | java-floor-flink | java-floor-spark | java-floor-direct
 *             | plain-python (the model's own loop in Python, a process a round)
 *   ROWS: one number for every approach, or one per approach
 * </pre>
 *
 * <p>Approaches named together are measured in one JVM, interleaved: each round measures each of
 * them once, a round starting one approach later than the one before. The project's machine (a VM)
 * drifts in speed by up to 2x within an hour and 1.5x within a run, so an approach and its baseline
 * (xinfer and the Java floor on the same runner, the microservice) measured minutes apart, each in
 * a JVM of its own, gave ratios that told the minute more than the approaches; interleaved, the
 * drift falls on both alike. Their lines then share the JVM's peak memory: the peak of them all.
 *
 * <p>The pipeline generates {@code ROWS} rows of 64 float features (value {@code (31 i + 7 j) mod
 * 17}, as {@code xinfer_bench.measure.rows} in Python), runs the model on them and counts the
 * outputs. After a warm-up run, each approach runs the pipeline {@value #REPETITIONS} times over
 * {@code ROWS / 5} and {@code ROWS} rows; each such pair gives a marginal throughput {@code (ROWS -
 * ROWS/5) / (T_large - T_small)}: the job start-up (engine, Python services, model load) cancels
 * out, what remains is the cost per row. The line reports the median of the pairs, with their
 * minimum and maximum.
 *
 * <p>Every approach on Flink or Spark runs on Beam's portable runner for that engine, the one
 * xinfer's RunInference needs: the approaches without RunInference (the microservice, ONNX Runtime
 * for Java, the floors) are prepared for it as RunInference prepares xinfer's, so that approaches
 * on one engine share one runner. The line names the runner the pipeline ran on, read from its
 * options once built: {@code flink-portable}, {@code spark-portable}, {@code direct} (Beam's
 * DirectRunner, where xinfer runs the Python stage inside a DoFn), or {@code flink-classic}/{@code
 * spark-classic} if a flag in {@code XINFER_BENCH_FLAGS} made it so. The floors ({@code
 * java-floor-*}) are the same Java pipeline with no model at all, one per runner an approach uses.
 *
 * <p>Every approach runs at parallelism 1 except {@code xinfer-flink-p2}: xinfer on two Flink
 * slots, the compute the microservice gets from its two requests in flight. The environment
 * variable {@code XINFER_BENCH_FLAGS} adds pipeline flags (space-separated) to every run.
 *
 * <p>Output (the columns of {@code xinfer_bench.measure.CSV_COLUMNS}): {@code
 * approach,runner,model,batch_size,rows,seconds_small,seconds_large,rows_per_second,
 * rows_per_second_min,rows_per_second_max,jvm_peak_rss_mb,python_peak_rss_mb}, the seconds those of
 * the median pair.
 */
public final class Bench {
  static final int FEATURES = 64;
  static final int REPETITIONS = 3;

  /**
   * The model's own predict loop in Python, measured with the approaches it is named with (one
   * {@code python -m xinfer_bench plain} process a round), so that their ratios to it compare the
   * same minutes.
   */
  static final String PLAIN_PYTHON = "plain-python";

  static final Schema ROW =
      Schema.builder().addInt64Field("id").addArrayField("features", FieldType.FLOAT).build();
  private static final Duration STALL = Duration.standardMinutes(10);
  private static @Nullable ModelServer server; // approach microservice: started by main

  private Bench() {}

  public static void main(String[] args) throws Exception {
    List<String> approaches = List.of(args[0].split(","));
    String model = args[1];
    int batchSize = Integer.parseInt(args[2]);
    List<Long> rows = rowsPerApproach(args[3], approaches.size());
    String python = args[4];
    for (String approach : approaches) {
      if (!approach.equals(PLAIN_PYTHON)) {
        engine(approach); // an unknown approach fails here, before anything starts
      }
    }
    PeakRss memory = new PeakRss();
    server = approaches.contains("microservice") ? ModelServer.start(python, model) : null;
    Map<String, Set<String>> runners = new HashMap<>(); // one each, unless a run went elsewhere
    Map<String, List<double[]>> pairs = new HashMap<>(); // {seconds small, large, rows/s}
    double pythonPeakMb = 0; // plain Python's, measured in its own processes
    for (int k = 0; k < approaches.size(); k++) {
      String approach = approaches.get(k);
      runners.put(approach, new TreeSet<>());
      pairs.put(approach, new ArrayList<>());
      if (approach.equals(PLAIN_PYTHON)) {
        runners.get(approach).add("none"); // it warms up in each of its processes
      } else {
        // Warm-up: class loading, the Python services, the SDK worker's imports.
        long warmUp = Math.min(rows.get(k) / 5, 1000);
        runners.get(approach).add(run(approach, model, batchSize, warmUp, python).runner);
      }
    }
    for (int i = 0; i < REPETITIONS; i++) {
      for (int k : roundOrder(approaches.size(), i)) {
        String approach = approaches.get(k);
        long n = rows.get(k);
        if (approach.equals(PLAIN_PYTHON)) {
          double[] loop = plainPython(python, model, batchSize, n, memory);
          pythonPeakMb = Math.max(pythonPeakMb, loop[2]);
          pairs.get(approach).add(new double[] {Double.NaN, loop[0], loop[1]});
          continue;
        }
        long small = n / 5;
        Run smallRun = run(approach, model, batchSize, small, python);
        Run largeRun = run(approach, model, batchSize, n, python);
        runners.get(approach).add(smallRun.runner);
        runners.get(approach).add(largeRun.runner);
        double tSmall = smallRun.seconds;
        double tLarge = largeRun.seconds;
        if (tLarge <= tSmall) {
          throw new IllegalStateException(
              String.format(
                  Locale.ROOT,
                  "%s: %d rows took no longer than %d (%.3f s, %.3f s): the rows cost less than"
                      + " the run-to-run noise; use more rows",
                  approach,
                  n,
                  small,
                  tLarge,
                  tSmall));
        }
        pairs.get(approach).add(new double[] {tSmall, tLarge, (n - small) / (tLarge - tSmall)});
      }
    }
    memory.close();
    for (int k = 0; k < approaches.size(); k++) {
      String approach = approaches.get(k);
      List<double[]> measured = pairs.get(approach);
      measured.sort(Comparator.comparingDouble(pair -> pair[2]));
      double[] median = measured.get(measured.size() / 2);
      boolean plain = approach.equals(PLAIN_PYTHON);
      System.out.printf(
          Locale.ROOT,
          "%s,%s,%s,%d,%d,%s,%.3f,%.1f,%.1f,%.1f,%s,%.0f%n",
          approach,
          String.join("+", runners.get(approach)),
          Paths.get(model).getFileName(),
          batchSize,
          rows.get(k),
          plain ? "" : String.format(Locale.ROOT, "%.3f", median[0]),
          median[1],
          median[2],
          measured.get(0)[2],
          measured.get(measured.size() - 1)[2],
          plain ? "" : String.format(Locale.ROOT, "%.0f", memory.jvmMb()),
          plain ? pythonPeakMb : memory.pythonMb());
    }
    if (server != null) {
      server.close();
    }
    System.exit(0);
  }

  /**
   * One timed loop of {@code plain-python} ({@code python -m xinfer_bench plain}: the model's own
   * predict loop over {@code n} rows after a warm-up, in a process of its own): {seconds, rows/s,
   * the process's peak memory in MB}.
   */
  static double[] plainPython(String python, String model, int batchSize, long n, PeakRss memory)
      throws Exception {
    Process process =
        new ProcessBuilder(
                python,
                "-m",
                "xinfer_bench",
                "plain",
                "--csv",
                "--repetitions=1",
                "--model=" + model,
                "--rows=" + n,
                "--batch-size=" + batchSize)
            .redirectError(ProcessBuilder.Redirect.INHERIT)
            .start();
    memory.exclude(process.pid()); // its own peak is in its line
    String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    if (process.waitFor() != 0) {
      throw new IllegalStateException(PLAIN_PYTHON + " failed (exit " + process.exitValue() + ")");
    }
    return plainPythonLine(out.strip().lines().reduce((a, b) -> b).orElse(""));
  }

  /** {seconds, rows/s, peak MB} of a {@code plain-python} CSV line ({@code CSV_COLUMNS}). */
  static double[] plainPythonLine(String line) {
    String[] cells = line.split(",", -1);
    if (cells.length != 12 || !cells[0].equals(PLAIN_PYTHON)) {
      throw new IllegalStateException("not a line of " + PLAIN_PYTHON + ": '" + line + "'");
    }
    return new double[] {
      Double.parseDouble(cells[6]), Double.parseDouble(cells[7]), Double.parseDouble(cells[11])
    };
  }

  /**
   * The rows of each of {@code count} approaches: {@code spec} is one number for all, or one per
   * approach, comma-separated.
   */
  static List<Long> rowsPerApproach(String spec, int count) {
    List<Long> rows = new ArrayList<>();
    for (String n : spec.split(",")) {
      rows.add(Long.parseLong(n.trim()));
    }
    if (rows.size() == 1) {
      return java.util.Collections.nCopies(count, rows.get(0));
    }
    if (rows.size() != count) {
      throw new IllegalArgumentException(
          "ROWS " + spec + ": give one number, or one per approach (" + count + ")");
    }
    return rows;
  }

  /**
   * The order in which round {@code round} measures {@code count} approaches: each round starts one
   * later, so that no approach is always measured first (after a pause) or last.
   */
  static List<Integer> roundOrder(int count, int round) {
    List<Integer> order = new ArrayList<>();
    for (int k = 0; k < count; k++) {
      order.add((round + k) % count);
    }
    return order;
  }

  /** One run of the pipeline: seconds from start to finish, and the runner it ran on. */
  static final class Run {
    final double seconds;
    final String runner;

    Run(double seconds, String runner) {
      this.seconds = seconds;
      this.runner = runner;
    }
  }

  /** The engine an approach asks for ({@code --runner}). */
  static String engine(String approach) {
    switch (approach) {
      case "xinfer-flink":
      case "xinfer-flink-p2":
      case "xinfer-flink-rows":
      case "onnxruntime-java":
      case "microservice":
      case "java-floor-flink":
        return "FlinkRunner";
      case "xinfer-spark":
      case "java-floor-spark":
        return "SparkRunner";
      case "xinfer-direct":
      case "java-floor-direct":
        return "DirectRunner";
      default:
        throw new IllegalArgumentException(
            "unknown approach "
                + approach
                + "; use xinfer-flink, xinfer-flink-p2, xinfer-flink-rows, xinfer-spark, "
                + "xinfer-direct, onnxruntime-java, microservice, java-floor-flink, "
                + "java-floor-spark or java-floor-direct");
    }
  }

  /**
   * The runner a built pipeline runs on: {@code flink-portable} or {@code spark-portable} (xinfer's
   * runner, Beam's portable runner for the engine), {@code direct}, or the classic runners.
   */
  static String runnerName(PipelineOptions options) {
    String runner = options.getRunner().getSimpleName();
    switch (runner) {
      case "XinferRunner":
        String engine = options.as(XinferOptions.class).getXinferRequestedRunner();
        return ("SparkRunner".equals(engine) ? "spark" : "flink") + "-portable";
      case "FlinkRunner":
        return "flink-classic";
      case "SparkRunner":
        return "spark-classic";
      case "DirectRunner":
        return "direct";
      default:
        return runner;
    }
  }

  /** One run of the pipeline over {@code n} rows. */
  static Run run(String approach, String model, int batchSize, long n, String python)
      throws Exception {
    String engine = engine(approach);
    List<String> flags = new ArrayList<>(List.of("--runner=" + engine));
    if (engine.equals("FlinkRunner")) {
      flags.add("--flinkMaster=[local]");
      flags.add("--parallelism=" + (approach.equals("xinfer-flink-p2") ? 2 : 1));
    } else if (engine.equals("SparkRunner")) {
      flags.add("--sparkMaster=local[1]");
    }
    String extra = System.getenv("XINFER_BENCH_FLAGS");
    if (extra != null && !extra.isBlank()) {
      flags.addAll(List.of(extra.trim().split("\\s+")));
    }
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs(flags.toArray(new String[0])).create();
    options.as(XinferOptions.class).setXinferPython(python);
    // Element by element, as before rows crossed in blocks: what the blocks buy.
    options.as(XinferOptions.class).setXinferRowBlocks(!approach.endsWith("-rows"));
    Pipeline p = Pipeline.create(options);
    // What RunInference does while the pipeline is built, for the approaches without it, so that
    // every approach on an engine runs on the same (portable) runner; a no-op on the DirectRunner.
    // After Pipeline.create, which instantiates the options' runner and so undoes an earlier swap.
    RunnerBootstrap.prepare(options);
    PCollection<Row> input =
        p.apply(GenerateSequence.from(0).to(n))
            .apply(MapElements.into(TypeDescriptors.rows()).via(Bench::row))
            .setRowSchema(ROW);
    PTransform<PCollection<Row>, ? extends PCollection<?>> inference;
    if (approach.equals("onnxruntime-java")) {
      inference = new InJvm(model, batchSize);
    } else if (approach.equals("microservice")) {
      inference =
          new Microservice(server.url(), Paths.get(model).getFileName().toString(), batchSize);
    } else if (approach.startsWith("java-floor-")) {
      inference = new Floor();
    } else {
      inference =
          RunInference.withModel(model).withMinBatchSize(batchSize).withMaxBatchSize(batchSize);
    }
    input.apply("Inference", inference).apply(Count.globally()).apply(ParDo.of(new Expect(n)));
    long start = System.nanoTime();
    PipelineResult result = p.run();
    if (result.waitUntilFinish(STALL) == null) {
      throw new IllegalStateException(
          approach + " did not finish " + n + " rows in " + STALL + " (a stalled job)");
    }
    return new Run((System.nanoTime() - start) / 1e9, runnerName(options));
  }

  /** Row {@code i} of the benchmark input. */
  static Row row(long i) {
    List<Float> features = new ArrayList<>(FEATURES);
    for (int j = 0; j < FEATURES; j++) {
      features.add((float) ((31 * i + 7L * j) % 17));
    }
    return Row.withSchema(ROW).addValues(i, features).build();
  }

  /** Fails the run unless exactly {@code n} outputs came out. */
  static final class Expect extends DoFn<Long, Void> {
    private final long n;

    Expect(long n) {
      this.n = n;
    }

    @ProcessElement
    public void process(@Element Long count) {
      if (count != n) {
        throw new IllegalStateException("expected " + n + " outputs, got " + count);
      }
    }
  }

  /**
   * No model: each output is its input's features as scores, in the output schema of RunInference.
   * What the Java pipeline costs on its own on a runner (rows made, output rows built, counted):
   * the floor under every Java approach on that runner.
   */
  static final class Floor extends PTransform<PCollection<Row>, PCollection<Row>> {
    @Override
    public PCollection<Row> expand(PCollection<Row> input) {
      Schema out = RunInference.outputSchema(ROW);
      return input
          .apply(
              MapElements.into(TypeDescriptors.rows())
                  .via(
                      (Row in) ->
                          Row.withSchema(out)
                              .addValues(in.getValues())
                              .addValues(in.getArray("features"), 0L, "floor")
                              .build()))
          .setRowSchema(out);
    }
  }

  /** Approach 5: the same ONNX model run by ONNX Runtime for Java inside the pipeline. */
  static final class InJvm extends PTransform<PCollection<Row>, PCollection<Row>> {
    private final String model;
    private final int batchSize;

    InJvm(String model, int batchSize) {
      this.model = model;
      this.batchSize = batchSize;
    }

    @Override
    public PCollection<Row> expand(PCollection<Row> input) {
      // The same output as RunInference's: the input fields plus the inference fields.
      return input
          .apply(ParDo.of(new OrtFn(model, batchSize)))
          .setRowSchema(RunInference.outputSchema(ROW));
    }
  }

  /** Batches rows within a bundle and runs each batch through an ONNX Runtime session. */
  static final class OrtFn extends DoFn<Row, Row> {
    private static final Schema OUT = RunInference.outputSchema(ROW);
    private final String model;
    private final int batchSize;
    private transient @Nullable OrtEnvironment env;
    private transient @Nullable OrtSession session;
    private transient @Nullable String inputName;
    private transient List<Row> batch;
    private transient List<Instant> timestamps;
    private transient String modelId;

    OrtFn(String model, int batchSize) {
      this.model = model;
      this.batchSize = batchSize;
    }

    @Setup
    public void setup() throws OrtException {
      env = OrtEnvironment.getEnvironment();
      OrtSession.SessionOptions options = new OrtSession.SessionOptions();
      options.setIntraOpNumThreads(1);
      session = env.createSession(model, options);
      inputName = session.getInputNames().iterator().next();
      modelId = Paths.get(model).getFileName().toString();
    }

    @StartBundle
    public void startBundle() {
      batch = new ArrayList<>(batchSize);
      timestamps = new ArrayList<>(batchSize);
    }

    @ProcessElement
    public void process(@Element Row row, @Timestamp Instant timestamp, OutputReceiver<Row> out)
        throws OrtException {
      batch.add(row);
      timestamps.add(timestamp);
      if (batch.size() == batchSize) {
        flush((r, t) -> out.outputWithTimestamp(r, t));
      }
    }

    @FinishBundle
    public void finishBundle(FinishBundleContext context) throws OrtException {
      flush((r, t) -> context.output(r, t, GlobalWindow.INSTANCE));
    }

    private void flush(BiConsumer<Row, Instant> out) throws OrtException {
      if (batch.isEmpty()) {
        return;
      }
      FloatBuffer buffer = FloatBuffer.allocate(batch.size() * FEATURES);
      for (Row row : batch) {
        for (Object v : row.getArray("features")) {
          buffer.put((Float) v);
        }
      }
      buffer.flip();
      try (OnnxTensor tensor =
              OnnxTensor.createTensor(env, buffer, new long[] {batch.size(), FEATURES});
          OrtSession.Result result = session.run(Map.of(inputName, tensor))) {
        float[][] scores = (float[][]) result.get(0).getValue();
        for (int i = 0; i < scores.length; i++) {
          List<Float> values = new ArrayList<>(scores[i].length);
          int best = 0;
          for (int k = 0; k < scores[i].length; k++) {
            values.add(scores[i][k]);
            best = scores[i][k] > scores[i][best] ? k : best;
          }
          Row in = batch.get(i);
          out.accept(
              Row.withSchema(OUT)
                  .addValues(
                      in.getInt64("id"), in.getArray("features"), values, (long) best, modelId)
                  .build(),
              timestamps.get(i));
        }
      }
      batch.clear();
      timestamps.clear();
    }

    @Teardown
    public void teardown() throws OrtException {
      if (session != null) {
        session.close();
      }
    }
  }
}
