package dev.xinfer.pipelines;

import dev.xinfer.InferenceMetrics;
import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.RunnerBootstrap;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BiFunction;
import java.util.function.Supplier;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.options.Validation;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Duration;

/**
 * Runs an example pipeline and prints the one-line summary scripts parse:
 *
 * <pre>
 * records=1797 failed=0 accuracy=0.97 throughput=2410/s runner=FlinkRunner mode=batch model=digits-mlp
 * records=9000 failed=2 dead_letters=2 missing=0 duplicates=0 accuracy=0.99 throughput=990/s ... mode=streaming
 * </pre>
 *
 * <p>{@code failed} is the records with no prediction; in streaming these are the dead letters
 * (records the pipeline could not score, with the reason) and the missing ones (no output at all),
 * and {@code duplicates} counts outputs read back more than once for a record. Throughput counts
 * predictions.
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

    @Description(
        "Output path prefix; predictions go to PREFIX-SSSSS-of-NNNNN.csv (streaming: the "
            + "predictions read back from Kafka).")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description(
        "The model, its framework told by its name: a TensorFlow SavedModel directory or .keras "
            + "file, a PyTorch TorchScript .pt/.pth/.ts file, a scikit-learn .joblib file or an "
            + "ONNX .onnx file.")
    @Validation.Required
    String getModelUri();

    void setModelUri(String value);

    @Description("The id each prediction carries; default: the model's file name.")
    @Nullable String getModelId();

    void setModelId(String value);

    @Description("Streaming: Kafka bootstrap servers.")
    @Default.String("127.0.0.1:9092")
    String getBootstrapServers();

    void setBootstrapServers(String value);

    @Description("Streaming: the topic examples are produced to; default: a new topic per run.")
    @Nullable String getInputTopic();

    void setInputTopic(String value);

    @Description("Streaming: the topic predictions are written to; default: a new topic per run.")
    @Nullable String getOutputTopic();

    void setOutputTopic(String value);

    @Description(
        "Streaming: the topic records that get no prediction go to, one JSON object each with "
            + "the reason; default: a new topic per run.")
    @Nullable String getDeadLetterTopic();

    void setDeadLetterTopic(String value);

    @Description(
        "Streaming: write predictions and dead letters exactly once, with xinfer's "
            + "transactional Kafka sink (KafkaExactlyOnceWrite), one transaction per checkpoint; "
            + "a record's output appears once the checkpoint after it completes. Default: on for "
            + "Flink with --checkpointingInterval set, off for Spark (Beam's Spark runner cannot "
            + "replay a stage's input as it was; it writes at least once) and the DirectRunner. "
            + "--exactlyOnce=false writes at least once, with duplicates after a restart counted "
            + "by the summary. The launcher reads with isolation.level=read_committed either way.")
    @Nullable Boolean getExactlyOnce();

    void setExactlyOnce(@Nullable Boolean value);

    @Description("Streaming: examples produced per second.")
    @Default.Integer(500)
    int getRate();

    void setRate(int value);

    @Description(
        "Streaming: how many examples to produce (default: every line of --input; more than the "
            + "input repeats it with new ids).")
    @Nullable Integer getRecords();

    void setRecords(Integer value);

    @Description(
        "Streaming: seconds, from the first prediction back, whose examples are left out of the "
            + "latency percentiles (the JVM is still compiling the pipeline's code; about a minute on a "
            + "small machine), during which the rate rises from a tenth of --rate to all of it. "
            + "They are still counted and written to the latency file.")
    @Default.Integer(0)
    int getWarmupSeconds();

    void setWarmupSeconds(int value);

    @Description("Streaming: seconds to wait for every prediction before giving up.")
    @Default.Integer(300)
    int getResultTimeoutSeconds();

    void setResultTimeoutSeconds(int value);

    @Description("Seconds between progress lines while a job runs.")
    @Default.Integer(5)
    int getProgressSeconds();

    void setProgressSeconds(int value);
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

    /** What RunInference reported ({@link InferenceMetrics}), when the runner gave metrics. */
    public final @Nullable String inference;

    /**
     * Streaming: what RunInference had reported while the job still ran, read through {@link
     * PipelineResult#metrics()} once every record was back and before the job was stopped; null
     * where the runner tells nothing while a job runs.
     */
    public final @Nullable String liveInference;

    /** Streaming: end-to-end latency percentiles, produce to prediction read back. */
    public final @Nullable Latency latency;

    /** Streaming: records that came back as dead letters (distinct records), else 0. */
    public final long deadLetters;

    /**
     * Streaming: outputs beyond the first for a record (a prediction or dead letter read back more
     * than once), else 0; -1 in batch, where the output files are not checked for them.
     */
    public final long duplicates;

    Summary(
        long records,
        long predictions,
        long correct,
        double seconds,
        String runner,
        String mode,
        String model,
        @Nullable String inference,
        @Nullable Latency latency) {
      this(
          records,
          predictions,
          correct,
          seconds,
          runner,
          mode,
          model,
          inference,
          null,
          latency,
          0,
          -1);
    }

    Summary(
        long records,
        long predictions,
        long correct,
        double seconds,
        String runner,
        String mode,
        String model,
        @Nullable String inference,
        @Nullable String liveInference,
        @Nullable Latency latency,
        long deadLetters,
        long duplicates) {
      this.inference = inference;
      this.liveInference = liveInference;
      this.latency = latency;
      this.deadLetters = deadLetters;
      this.duplicates = duplicates;
      this.records = records;
      this.predictions = predictions;
      this.correct = correct;
      this.seconds = seconds;
      this.runner = runner;
      this.mode = mode;
      this.model = model;
    }

    Summary withInference(@Nullable String metrics) {
      return new Summary(
          records,
          predictions,
          correct,
          seconds,
          runner,
          mode,
          model,
          metrics,
          liveInference,
          latency,
          deadLetters,
          duplicates);
    }

    Summary withLatency(@Nullable Latency latency) {
      return new Summary(
          records,
          predictions,
          correct,
          seconds,
          runner,
          mode,
          model,
          inference,
          liveInference,
          latency,
          deadLetters,
          duplicates);
    }

    Summary withLiveInference(@Nullable String metrics) {
      return new Summary(
          records,
          predictions,
          correct,
          seconds,
          runner,
          mode,
          model,
          inference,
          metrics,
          latency,
          deadLetters,
          duplicates);
    }

    Summary withDeliveries(long deadLetters, long duplicates) {
      return new Summary(
          records,
          predictions,
          correct,
          seconds,
          runner,
          mode,
          model,
          inference,
          liveInference,
          latency,
          deadLetters,
          duplicates);
    }

    /** Records with no prediction: dead letters and missing ones. */
    public long failed() {
      return records - predictions;
    }

    /** Records with neither a prediction nor a dead letter. */
    public long missing() {
      return records - predictions - deadLetters;
    }

    public double accuracy() {
      return predictions == 0 ? 0 : (double) correct / predictions;
    }

    @Override
    public String toString() {
      return String.format(
              Locale.ROOT,
              "records=%d failed=%d%s accuracy=%.3f throughput=%.0f/s runner=%s mode=%s model=%s",
              records,
              failed(),
              duplicates < 0
                  ? ""
                  : String.format(
                      Locale.ROOT,
                      " dead_letters=%d missing=%d duplicates=%d",
                      deadLetters,
                      missing(),
                      duplicates),
              accuracy(),
              // Predictions made per second: a record that got none is not throughput.
              seconds > 0 ? predictions / seconds : 0.0,
              runner,
              mode,
              model)
          + (latency == null ? "" : " " + latency)
          + (inference == null ? "" : " | " + inference);
    }
  }

  /**
   * End-to-end latency of a streaming run, in milliseconds: from an example's send to Kafka to its
   * prediction read back from the output topic, over the examples sent once the job was up (after
   * the first prediction came back) and warm ({@code --warmupSeconds} after that), so that the
   * job's start-up and the JVM's compiling are not counted.
   */
  public static final class Latency {
    public final double p50;
    public final double p90;
    public final double p99;
    public final double max;

    private Latency(double p50, double p90, double p99, double max) {
      this.p50 = p50;
      this.p90 = p90;
      this.p99 = p99;
      this.max = max;
    }

    /** The percentiles of {@code millis} (nearest rank), or null when there are none. */
    static @Nullable Latency of(double... millis) {
      if (millis.length == 0) {
        return null;
      }
      double[] sorted = millis.clone();
      Arrays.sort(sorted);
      return new Latency(
          rank(sorted, 0.50), rank(sorted, 0.90), rank(sorted, 0.99), sorted[sorted.length - 1]);
    }

    private static double rank(double[] sorted, double q) {
      return sorted[Math.max(0, (int) Math.ceil(q * sorted.length) - 1)];
    }

    @Override
    public String toString() {
      return String.format(
          Locale.ROOT, "latency_ms(p50=%.1f p90=%.1f p99=%.1f max=%.1f)", p50, p90, p99, max);
    }
  }

  private Launcher() {}

  /** Parses {@code args}, builds and runs the pipeline, prints the summary; exits on error. */
  public static <T extends Options> void launch(
      String[] args, Class<T> optionsClass, BiFunction<Pipeline, T, Pipeline> build) {
    report(() -> run(args, optionsClass, build));
  }

  /**
   * Prints what {@code run} returns and exits 0; a bad flag ends with its message on stderr and
   * exit code 2, a failed run with exit code 1.
   */
  static void report(Supplier<?> run) {
    try {
      System.out.println(run.get());
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

  /** Runs the pipeline to the end (streaming: until every prediction is back) and summarizes. */
  public static <T extends Options> Summary run(
      String[] args, Class<T> optionsClass, BiFunction<Pipeline, T, Pipeline> build) {
    T options = options(args, optionsClass);
    return options.as(StreamingOptions.class).isStreaming()
        ? runStreaming(options, build)
        : runBatch(options, build);
  }

  /**
   * The pipeline options of {@code args}: {@code --profile} expanded, the FlinkRunner unless a
   * runner is named, the runner checked, required flags validated.
   */
  static <T extends XinferOptions> T options(String[] args, Class<T> optionsClass) {
    String[] withRunner = withDefaultRunner(Profiles.expand(args));
    for (String arg : withRunner) {
      if (arg.startsWith("--runner=")) {
        RunnerBootstrap.checkSupported(arg.substring("--runner=".length()));
      }
    }
    return PipelineOptionsFactory.fromArgs(withRunner).withValidation().as(optionsClass);
  }

  /**
   * Waits for a batch job to end, with a progress line every {@code progressSeconds}: the seconds
   * so far and, where the runner reports RunInference's metrics while a job runs, the records done
   * (those RunInference has given a prediction or a failure). Runners count a bundle's records when
   * it ends: Spark when a task ends, Flink when a bundle ends (in batch a task's whole input is one
   * bundle); the DirectRunner runs the whole job before {@code run()} returns, so it shows none.
   * Returns the runner's name as the summary shows it.
   */
  static String waitWithProgress(
      PipelineResult result, XinferOptions options, int progressSeconds) {
    long start = System.nanoTime();
    String runner = runnerName(options);
    while (result.waitUntilFinish(Duration.standardSeconds(progressSeconds)) == null) {
      if (Thread.currentThread().isInterrupted()) {
        // waitUntilFinish returns at once in an interrupted thread: stop the job and the wait.
        try {
          result.cancel();
        } catch (IOException | RuntimeException e) {
          progress("the interrupted batch job on %s could not be cancelled: %s", runner, e);
        }
        throw new IllegalStateException(
            "interrupted while waiting for the batch job on " + runner + " to end; cancelled it");
      }
      progress(
          "batch job running on %s for %.0f s%s",
          runner, (System.nanoTime() - start) / 1e9, recordsDone(liveMetrics(result)));
    }
    return runner;
  }

  /**
   * {@code : records done N (predictions P, failures F)} of RunInference's metrics so far, or what
   * the runner could not tell.
   */
  static String recordsDone(@Nullable InferenceMetrics metrics) {
    if (metrics == null) {
      return " (no record counts from the runner yet)";
    }
    return String.format(
        Locale.ROOT,
        ": records done %d (predictions %d, failures %d)",
        metrics.predictions() + metrics.failures(),
        metrics.predictions(),
        metrics.failures());
  }

  /**
   * RunInference's metrics of a job while it runs, or null when the runner reports none yet (it
   * never waits for the job).
   */
  static @Nullable InferenceMetrics liveMetrics(PipelineResult result) {
    try {
      return InferenceMetrics.of(result);
    } catch (RuntimeException e) {
      return null; // UnsupportedOperationException: none while it runs
    }
  }

  /**
   * The latest value of a slow read (a running job's metrics), read every {@code periodSeconds} on
   * a daemon thread of its own, so that whoever prints it never waits for the read.
   */
  static final class Latest<T> implements AutoCloseable {
    private final java.util.concurrent.atomic.AtomicReference<@Nullable T> latest =
        new java.util.concurrent.atomic.AtomicReference<>();
    private final java.util.concurrent.ScheduledExecutorService reader =
        java.util.concurrent.Executors.newSingleThreadScheduledExecutor(
            task -> {
              Thread thread = new Thread(task, "xinfer-live-metrics");
              thread.setDaemon(true);
              return thread;
            });

    /**
     * Reads first a second before the first period ends (a read done by the first progress line),
     * then every period; a read that returns null keeps the value before it.
     */
    Latest(java.util.function.Supplier<@Nullable T> read, int periodSeconds) {
      reader.scheduleWithFixedDelay(
          () -> {
            T value = read.get();
            if (value != null) {
              latest.set(value);
            }
          },
          Math.max(0, periodSeconds - 1),
          periodSeconds,
          TimeUnit.SECONDS);
    }

    /** The last value read, or null before any read returned one. */
    @Nullable T get() {
      return latest.get();
    }

    /** Stops reading; a read under way is interrupted. */
    @Override
    public void close() {
      reader.shutdownNow();
    }
  }

  /**
   * RunInference's metrics of a running streaming job once they account for the {@code done}
   * records that came back (a runner's metrics can trail its output by a moment: Flink's REST
   * server refreshes them every second on the embedded Flink), or the last seen after {@code
   * patience}; null when the runner reports none while a job runs.
   */
  static @Nullable String awaitLiveMetrics(
      PipelineResult result, long done, java.time.Duration patience) {
    long deadline = System.nanoTime() + patience.toNanos();
    InferenceMetrics metrics = liveMetrics(result);
    while (metrics != null
        && metrics.predictions() + metrics.failures() < done
        && System.nanoTime() < deadline) {
      try {
        Thread.sleep(250);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
      metrics = liveMetrics(result);
    }
    return metrics == null ? null : metrics.toString();
  }

  private static <T extends Options> Summary runBatch(
      T options, BiFunction<Pipeline, T, Pipeline> build) {
    Pipeline pipeline = build.apply(Pipeline.create(options), options);
    long start = System.nanoTime();
    PipelineResult result = pipeline.run();
    String runner = waitWithProgress(result, options, options.getProgressSeconds());
    double seconds = (System.nanoTime() - start) / 1e9;
    return summarize(
            Paths.get(options.getInput()),
            options.getOutput(),
            seconds,
            runner,
            "batch",
            model(options))
        .withInference(inferenceMetrics(result));
  }

  /**
   * Streaming: starts the job, produces the first example and, once its prediction is back, the
   * others to Kafka at {@code --rate}; reads the predictions back until each example has one (or
   * {@code --resultTimeoutSeconds} passes), cancels the job and writes what came back to {@code
   * --output} for the summary.
   */
  private static <T extends Options> Summary runStreaming(
      T options, BiFunction<Pipeline, T, Pipeline> build) {
    checkStreamingFlags(options);
    String runName = "xinfer-" + UUID.randomUUID().toString().substring(0, 8);
    // The topics the run names itself, deleted at its end (those given are left as they are).
    List<String> ownTopics = new ArrayList<>();
    if (options.getInputTopic() == null) {
      options.setInputTopic(runName + "-in");
      ownTopics.add(options.getInputTopic());
    }
    if (options.getOutputTopic() == null) {
      options.setOutputTopic(runName + "-out");
      ownTopics.add(options.getOutputTopic());
    }
    if (options.getDeadLetterTopic() == null) {
      options.setDeadLetterTopic(runName + "-dead");
      ownTopics.add(options.getDeadLetterTopic());
    }
    List<String> examples = dataLines(Paths.get(options.getInput()));
    if (options.getRecords() != null) {
      examples = repeated(examples, options.getRecords());
    }
    String runner = runnerName(options);
    RecordIds ids = RecordIds.of(examples);
    Deliveries deliveries = new Deliveries(ids);
    // Steady records' latencies, at most one per example. The predictions and the latency file's
    // lines go to files as they come: nothing per record stays on the heap the job shares.
    double[] latencies = new double[examples.size()];
    int steady = 0;
    Path arrivedFile = Paths.get(options.getOutput() + "-arrived.tmp").toAbsolutePath();
    Path latencyFile = Paths.get(options.getOutput() + "-latency.csv").toAbsolutePath();
    long warmupNanos = TimeUnit.SECONDS.toNanos(options.getWarmupSeconds());
    // Read once: the options are a proxy, and each call on it a reflective lookup (JFR: 3% of this
    // thread's time at 10,000 records/s when read per prediction).
    String outputTopic = options.getOutputTopic();
    // Written at least once, a prediction's Kafka timestamp is when the pipeline's source read its
    // example (DigitsPipeline.write): read_ms, from the send, is the time before the pipeline, and
    // latency_ms - read_ms the time in it and back. Only with --exactlyOnce=false: exactly once,
    // or left to the runner, the timestamp can be a transaction's, so read_ms stays empty.
    boolean readTimes = Boolean.FALSE.equals(options.getExactlyOnce());
    long epochMinusNanoTime = System.currentTimeMillis() * 1_000_000L - System.nanoTime();
    long start;
    long firstArrival = 0;
    long lastArrival;
    @Nullable String inference;
    @Nullable String liveInference = null;
    createParent(latencyFile);
    try (KafkaDriver kafka = new KafkaDriver(options.getBootstrapServers(), ids);
        BufferedWriter arrived = Files.newBufferedWriter(arrivedFile, StandardCharsets.UTF_8);
        BufferedWriter latencyLines =
            Files.newBufferedWriter(latencyFile, StandardCharsets.UTF_8)) {
      latencyLines.write("id,latency_ms,phase,sent_ms,read_ms\n");
      kafka.createTopics(
          1, options.getInputTopic(), options.getOutputTopic(), options.getDeadLetterTopic());
      kafka.subscribe(options.getOutputTopic(), options.getDeadLetterTopic());
      Pipeline pipeline = build.apply(Pipeline.create(options), options);
      PipelineResult result = pipeline.run();
      // The runner's metrics are read on a thread of their own: a read takes ~150 ms on the
      // embedded Flink (its REST API), and on this thread it held back the reading of the
      // predictions, adding up to that to the latency of every record that came back meanwhile
      // (p99 at 1,000 records/s 86-105 ms with the reads here, 67-70 ms without them).
      Latest<InferenceMetrics> live =
          new Latest<>(() -> liveMetrics(result), options.getProgressSeconds());
      try {
        start = System.nanoTime();
        lastArrival = start;
        // The first example alone, the rest at the rate once its prediction is back: the job's
        // start-up does not pile a backlog in front of the measured examples.
        kafka.produceAtRate(options.getInputTopic(), examples.subList(0, 1), options.getRate(), 0);
        boolean restSent = examples.size() == 1;
        long deadline = start + TimeUnit.SECONDS.toNanos(options.getResultTimeoutSeconds());
        long nextProgress = start + TimeUnit.SECONDS.toNanos(options.getProgressSeconds());
        while (deliveries.accountedFor() < examples.size() && System.nanoTime() < deadline) {
          List<ConsumerRecord<Long, String>> polled = kafka.poll(java.time.Duration.ofMillis(200));
          if (!polled.isEmpty()) {
            lastArrival = System.nanoTime();
            if (firstArrival == 0) {
              firstArrival = lastArrival;
            }
            if (!restSent) {
              // The warm-up ramps the rate up (KafkaDriver.dueNanos): the measured records go
              // out at the full rate, not behind a backlog the JIT's start left.
              kafka.produceAtRate(
                  options.getInputTopic(),
                  examples.subList(1, examples.size()),
                  options.getRate(),
                  options.getWarmupSeconds());
              restSent = true;
            }
            for (ConsumerRecord<Long, String> record : polled) {
              boolean prediction = record.topic().equals(outputTopic);
              Long id = record.key();
              if (!deliveries.add(prediction, id, record.value()) || !prediction || id == null) {
                continue;
              }
              arrived.write(id + "," + record.value() + "\n");
              long sent = kafka.sentAt(id);
              if (sent != KafkaDriver.NOT_SENT) {
                double millis = (lastArrival - sent) / 1e6;
                String phase = phase(sent, firstArrival, warmupNanos);
                if (phase.equals(STEADY)) {
                  latencies[steady++] = millis;
                }
                // sent_ms, from the job's start: the rate the examples really went out at.
                // Microseconds as integers, not String.format: this thread reads every prediction
                // and shares the machine with the job (String.format was 8% of the CPU at 20,000
                // records/s).
                latencyLines.write(
                    id
                        + ","
                        + millis(lastArrival - sent)
                        + ","
                        + phase
                        + ","
                        + millis(sent - start)
                        + ","
                        + (readTimes
                            ? millis(record.timestamp() * 1_000_000L - sent - epochMinusNanoTime)
                            : "")
                        + "\n");
              }
            }
          }
          if (result.getState().isTerminal()) {
            result.waitUntilFinish(); // throws the job's failure
            throw new IllegalStateException(
                runner + " ended the streaming job (" + result.getState() + ") before it was done");
          }
          if (System.nanoTime() >= nextProgress) {
            double elapsed = (System.nanoTime() - start) / 1e9;
            InferenceMetrics latest = live.get();
            progress(
                "streaming on %s: in=%d out=%d dead_letters=%d duplicates=%d (%.0f/s) after %.0f s"
                    + "%s",
                runner,
                kafka.produced(),
                deliveries.predictions,
                deliveries.deadLetters(),
                deliveries.duplicates,
                deliveries.predictions / elapsed,
                elapsed,
                latest == null ? "" : " | " + latest);
            nextProgress += TimeUnit.SECONDS.toNanos(options.getProgressSeconds());
          }
        }
        live.close();
        if (!result.getState().isTerminal()) {
          liveInference =
              awaitLiveMetrics(result, deliveries.accountedFor(), java.time.Duration.ofSeconds(5));
        }
      } finally {
        live.close();
        stop(result);
      }
      inference = inferenceMetrics(result);
      if (deliveries.deadLetters() > 0) {
        ownTopics.remove(options.getDeadLetterTopic()); // kept for the reasons, named below
      }
      String notDeleted = kafka.deleteTopics(ownTopics);
      if (notDeleted != null) {
        progress("could not delete this run's topics %s: %s", ownTopics, notDeleted);
      }
    } catch (IOException e) {
      throw new UncheckedIOException("cannot write " + arrivedFile + " or " + latencyFile, e);
    }
    writePredictions(options.getOutput(), byId(arrivedFile));
    Summary summary =
        summarize(
                examples.size(),
                options.getOutput(),
                // Throughput while predictions flowed: the job's start-up is not part of it.
                firstArrival == 0 ? 0 : (lastArrival - firstArrival) / 1e9,
                runner,
                "streaming",
                model(options))
            .withInference(inference)
            .withLiveInference(liveInference)
            .withLatency(Latency.of(Arrays.copyOf(latencies, steady)))
            .withDeliveries(deliveries.deadLetters(), deliveries.duplicates);
    if (steady == 0 && options.getWarmupSeconds() > 0) {
      progress(
          "no example was sent after the %d s warm-up, so no latency is reported: produce more "
              + "(--records) or shorten --warmupSeconds",
          options.getWarmupSeconds());
    }
    if (summary.deadLetters > 0) {
      progress(
          "%d records got no prediction and went to the dead-letter topic %s, each with the "
              + "reason; first: %s",
          summary.deadLetters, options.getDeadLetterTopic(), deliveries.firstDeadLetter);
    }
    if (summary.missing() > 0) {
      progress(
          "%d of %d records got neither a prediction nor a dead letter within %d s",
          summary.missing(), summary.records, options.getResultTimeoutSeconds());
    }
    return summary;
  }

  /**
   * What a streaming run's output and dead-letter topics held: which records got a prediction and
   * which a dead letter (the first output per record counts; a record has one or the other), and
   * every output beyond the first for a record. Bits by the record's position among the run's ids
   * (see {@link RecordIds}); a set for ids the run did not send.
   */
  static final class Deliveries {
    private final RecordIds ids;
    private final BitSet predicted = new BitSet();
    private final BitSet dead = new BitSet();
    private final Set<Long> otherIds = new HashSet<>();
    long predictions;
    long deadLettersWithId;
    long deadLettersWithoutId;
    long duplicates;
    @Nullable String firstDeadLetter;

    Deliveries(RecordIds ids) {
      this.ids = ids;
    }

    /** Records one output; returns whether it was the first for its record. */
    boolean add(boolean prediction, @Nullable Long id, String value) {
      if (!prediction && firstDeadLetter == null) {
        firstDeadLetter = value;
      }
      if (id == null) {
        if (!prediction) {
          deadLettersWithoutId++;
        }
        return true;
      }
      int index = ids.indexOf(id);
      boolean first;
      if (index == RecordIds.UNKNOWN) {
        first = otherIds.add(id);
      } else {
        first = !predicted.get(index) && !dead.get(index);
        (prediction ? predicted : dead).set(index);
      }
      if (!first) {
        duplicates++;
      } else if (prediction) {
        predictions++;
      } else {
        deadLettersWithId++;
      }
      return first;
    }

    long deadLetters() {
      return deadLettersWithId + deadLettersWithoutId;
    }

    /** Records with an output of either kind. */
    long accountedFor() {
      return predictions + deadLetters();
    }
  }

  /** Fails with the flag, its value and the fix, before anything starts. */
  static void checkStreamingFlags(Options options) {
    if (options.getRate() <= 0) {
      throw new IllegalArgumentException(
          "--rate=" + options.getRate() + " is not a rate: give examples per second, e.g. 500");
    }
    if (options.getRecords() != null && options.getRecords() <= 0) {
      throw new IllegalArgumentException(
          "--records=" + options.getRecords() + ": give at least 1, or leave it out for the input");
    }
    if (options.getWarmupSeconds() < 0) {
      throw new IllegalArgumentException(
          "--warmupSeconds=" + options.getWarmupSeconds() + ": give 0 or more seconds");
    }
  }

  static final String STARTUP = "startup";
  static final String WARMUP = "warmup";
  static final String STEADY = "steady";

  /**
   * Which part of a streaming run an example sent at {@code sentNanos} belongs to: {@value
   * #STARTUP} before the job was up (its first prediction back at {@code firstArrivalNanos}),
   * {@value #WARMUP} within {@code warmupNanos} after that, then {@value #STEADY}.
   */
  /** Nanoseconds as milliseconds with three decimals ({@code 1234567} is {@code "1.234"}). */
  static String millis(long nanos) {
    long micros = Math.abs(nanos / 1000);
    String fraction = Long.toString(1000 + micros % 1000).substring(1);
    return (nanos < 0 ? "-" : "") + micros / 1000 + "." + fraction;
  }

  static String phase(long sentNanos, long firstArrivalNanos, long warmupNanos) {
    if (firstArrivalNanos == 0 || sentNanos < firstArrivalNanos) {
      return STARTUP;
    }
    return sentNanos < firstArrivalNanos + warmupNanos ? WARMUP : STEADY;
  }

  /** The run's RunInference metrics as one line, or null when the runner reports none. */
  private static @Nullable String inferenceMetrics(PipelineResult result) {
    try {
      InferenceMetrics metrics = InferenceMetrics.of(result);
      return metrics.inferences() == 0 && metrics.failures() == 0 ? null : metrics.toString();
    } catch (RuntimeException e) {
      progress("no RunInference metrics from the runner (%s)", e);
      return null;
    }
  }

  /** Cancels a job that is still running; a failure to do so is reported, never thrown over. */
  private static void stop(PipelineResult result) {
    if (result.getState().isTerminal()) {
      return;
    }
    try {
      result.cancel();
    } catch (IOException | RuntimeException e) {
      progress("could not cancel the job (%s); stop it in the engine's UI", e.getMessage());
    }
  }

  private static String runnerName(XinferOptions options) {
    String requested = options.getXinferRequestedRunner();
    return requested != null ? requested : options.getRunner().getSimpleName();
  }

  private static String model(Options options) {
    return options.getModelId() != null
        ? options.getModelId()
        : Paths.get(options.getModelUri()).getFileName().toString();
  }

  private static void progress(String format, Object... args) {
    System.err.println("xinfer: " + String.format(Locale.ROOT, format, args));
  }

  /**
   * The first {@code n} examples; past the end of the input, the input again with ids shifted past
   * the largest (so that every example has its own id and its prediction can be matched).
   */
  static List<String> repeated(List<String> examples, int n) {
    if (n <= examples.size()) {
      return examples.subList(0, n);
    }
    long stride = 1 + examples.stream().mapToLong(Launcher::idOf).max().orElse(0);
    List<String> out = new ArrayList<>(n);
    for (int i = 0; i < n; i++) {
      String line = examples.get(i % examples.size());
      long round = i / examples.size();
      out.add(
          round == 0 ? line : (idOf(line) + round * stride) + line.substring(line.indexOf(',')));
    }
    return out;
  }

  private static long idOf(String line) {
    return Long.parseLong(line.substring(0, line.indexOf(',')));
  }

  /** A CSV file's data lines: no header ({@code id,...}), no blank line. */
  static List<String> dataLines(Path input) {
    try (Stream<String> lines = Files.lines(input, StandardCharsets.UTF_8)) {
      return lines.filter(l -> !l.startsWith("id,") && !l.isBlank()).collect(Collectors.toList());
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read " + input, e);
    }
  }

  /**
   * The lines of {@code arrived} ({@code id,prediction}, as they came back), each without its id,
   * in the order of their ids; deletes the file.
   */
  static List<String> byId(Path arrived) {
    try {
      List<String> lines = Files.readAllLines(arrived, StandardCharsets.UTF_8);
      lines.sort(
          Comparator.comparingLong(line -> Long.parseLong(line.substring(0, line.indexOf(',')))));
      lines.replaceAll(line -> line.substring(line.indexOf(',') + 1));
      Files.delete(arrived);
      return lines;
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read " + arrived, e);
    }
  }

  private static void createParent(Path file) {
    try {
      Files.createDirectories(file.toAbsolutePath().getParent());
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private static void writePredictions(String outputPrefix, Iterable<String> lines) {
    writeLines(Paths.get(outputPrefix + "-00000-of-00001.csv"), lines);
  }

  private static void writeLines(Path path, Iterable<String> lines) {
    Path file = path.toAbsolutePath();
    createParent(file);
    try {
      Files.write(file, lines, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
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
    return summarize(dataLines(input).size(), outputPrefix, seconds, runner, mode, model);
  }

  static Summary summarize(
      long records, String outputPrefix, double seconds, String runner, String mode, String model) {
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
    return new Summary(records, predictions, correct, seconds, runner, mode, model, null, null);
  }

  /**
   * {@code --filesToStage} for the example pipelines on a Flink cluster whose nodes hold xinfer's
   * job runtime (xinfer, Beam, KafkaIO; {@code ./xinfer cluster up flink}): their own classes only
   * (this module's jar or class folder), instead of the launcher JVM's whole classpath.
   */
  static String filesToStageFlag() {
    try {
      return "--filesToStage="
          + Path.of(Launcher.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    } catch (java.net.URISyntaxException e) {
      throw new IllegalStateException("the example pipelines' code location is not a path", e);
    }
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
