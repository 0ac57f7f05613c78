package dev.xinfer;

import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.metrics.DistributionResult;
import org.apache.beam.sdk.metrics.MetricNameFilter;
import org.apache.beam.sdk.metrics.MetricQueryResults;
import org.apache.beam.sdk.metrics.MetricResult;
import org.apache.beam.sdk.metrics.MetricsFilter;

/**
 * What {@link RunInference} reported about a run, read from {@link PipelineResult#metrics()}: the
 * Python RunInference metrics (namespace {@value #NAMESPACE}) summed over workers and steps.
 *
 * <pre>{@code
 * PipelineResult result = p.run();
 * result.waitUntilFinish();
 * InferenceMetrics metrics = InferenceMetrics.of(result);
 * System.out.println(metrics);  // inferences=1797 predictions=1797 failures=0 batches=15 ...
 * }</pre>
 *
 * <p>While a job runs, {@code of(result)} reads what the runner has so far (a bundle's work counts
 * when the bundle ends): on Spark the driver's accumulator; on Flink, embedded or a cluster,
 * Flink's own metric system through its REST API, at most {@code metrics.fetcher.update-interval}
 * old (1 s on the embedded Flink). There a model id reads with {@code .}, {@code :}, {@code ,} and
 * spaces as {@code _}, as Flink's REST API shows it. The DirectRunner runs the job inside {@code
 * run()}.
 *
 * <p>Counts reconcile: every record that reached RunInference is in {@link #predictions()} or
 * {@link #failures()}. Values are the runner's committed metrics where it has them (the
 * DirectRunner: each bundle's work once, a retried bundle's failed attempts not counted), else its
 * attempted ones (Flink, Spark: a retried bundle counts each attempt). The DirectRunner's attempted
 * values may miss the last bundles of a finished run: it adds a bundle's attempted metrics only
 * after it has handed the bundle's result on, so {@code run()} can return first (apache/beam#19816;
 * xinfer saw 53 of 64 inferences).
 */
public final class InferenceMetrics {
  /** The metrics namespace of xinfer's Python side. */
  public static final String NAMESPACE = "xinfer";

  // The names the Python side reports under (Python's xinfer.metrics, which `python -m
  // xinfer.metrics` prints; MetricNamesIT checks these against it).
  static final String NUM_INFERENCES = "num_inferences";
  static final String PREDICTIONS = "predictions";
  static final String FAILURES = "failures";
  static final String FAILED_PREFIX = "failed_";
  static final String FAILED_BATCHES = "failed_batches_counter";
  static final String PREDICTIONS_BY_MODEL_PREFIX = "predictions_by_model/";
  static final String MODEL_REFRESHES = "model_refreshes";
  static final String BATCH_SIZE = "inference_request_batch_size";
  static final String BATCH_LATENCY_MICROS = "inference_batch_latency_micro_secs";
  static final String LOAD_MODEL_LATENCY_MILLIS = "load_model_latency_milli_secs";
  static final String KEYED_LOAD_MODEL_LATENCY_MILLIS = "keyed_load_model_latency_milli_secs";

  /** The counters this class reads by name. */
  static final List<String> COUNTERS_READ =
      List.of(NUM_INFERENCES, PREDICTIONS, FAILURES, FAILED_BATCHES, MODEL_REFRESHES);

  /** The distributions this class reads by name. */
  static final List<String> DISTRIBUTIONS_READ =
      List.of(
          BATCH_SIZE,
          BATCH_LATENCY_MICROS,
          LOAD_MODEL_LATENCY_MILLIS,
          KEYED_LOAD_MODEL_LATENCY_MILLIS);

  private final Map<String, Long> counters;
  private final Map<String, DistributionResult> distributions;

  private InferenceMetrics(
      Map<String, Long> counters, Map<String, DistributionResult> distributions) {
    this.counters = counters;
    this.distributions = distributions;
  }

  /** The metrics of a run (finished, or so far for a running job where the runner reports them). */
  public static InferenceMetrics of(PipelineResult result) {
    MetricQueryResults results =
        result
            .metrics()
            .queryMetrics(
                MetricsFilter.builder()
                    .addNameFilter(MetricNameFilter.inNamespace(NAMESPACE))
                    .build());
    Map<String, Long> counters = new TreeMap<>();
    for (MetricResult<Long> counter : results.getCounters()) {
      counters.merge(counter.getName().getName(), valueOf(counter), Long::sum);
    }
    Map<String, DistributionResult> distributions = new TreeMap<>();
    for (MetricResult<DistributionResult> d : results.getDistributions()) {
      distributions.merge(d.getName().getName(), valueOf(d), InferenceMetrics::merge);
    }
    return new InferenceMetrics(counters, distributions);
  }

  /** A metric's committed value where the runner has one, else its attempted value. */
  static <T> T valueOf(MetricResult<T> result) {
    T committed = result.getCommittedOrNull();
    return committed != null ? committed : result.getAttempted();
  }

  /** Records given to a model (Beam's {@code num_inferences}). */
  public long inferences() {
    return counter(NUM_INFERENCES);
  }

  /** Records that got a prediction. */
  public long predictions() {
    return counter(PREDICTIONS);
  }

  /** Records that got none (in the dead-letter output, or failing the run without one). */
  public long failures() {
    return counter(FAILURES);
  }

  /**
   * Failed records by stage: {@code conversion}, {@code inference}, ... (stages with none left
   * out).
   */
  public Map<String, Long> failuresByStage() {
    Map<String, Long> byStage = new TreeMap<>();
    counters.forEach(
        (name, value) -> {
          if (name.startsWith(FAILED_PREFIX) && !name.equals(FAILED_BATCHES) && value > 0) {
            byStage.put(name.substring(FAILED_PREFIX.length()), value);
          }
        });
    return byStage;
  }

  /** Batches handed to models. */
  public long batches() {
    return distribution(BATCH_SIZE).getCount();
  }

  /** The mean batch size, or 0 with no batches. */
  public double meanBatchSize() {
    return distribution(BATCH_SIZE).getMean();
  }

  /** The mean time a model took per batch, in milliseconds. */
  public double meanBatchLatencyMillis() {
    return distribution(BATCH_LATENCY_MICROS).getMean() / 1000.0;
  }

  /** The longest model load, in milliseconds (0 if none was reported). */
  public long maxModelLoadMillis() {
    // An empty distribution's max is Long.MIN_VALUE: no load reported reads as 0.
    return Math.max(
        0L,
        Math.max(
            distribution(LOAD_MODEL_LATENCY_MILLIS).getMax(),
            distribution(KEYED_LOAD_MODEL_LATENCY_MILLIS).getMax()));
  }

  /**
   * Predictions by the id of the model that made them (the {@code model_id} each prediction
   * carries; counters {@code predictions_by_model/<id>}): the models in use, and how much each
   * served. After a model refresh the new id's count grows and the old one's stops.
   */
  public Map<String, Long> predictionsByModel() {
    Map<String, Long> byModel = new TreeMap<>();
    counters.forEach(
        (name, value) -> {
          if (name.startsWith(PREDICTIONS_BY_MODEL_PREFIX) && value > 0) {
            byModel.put(name.substring(PREDICTIONS_BY_MODEL_PREFIX.length()), value);
          }
        });
    return byModel;
  }

  /** New model versions loaded by model refresh. */
  public long modelRefreshes() {
    return counter(MODEL_REFRESHES);
  }

  /** A counter by its name in the {@value #NAMESPACE} namespace (0 when not reported). */
  public long counter(String name) {
    return counters.getOrDefault(name, 0L);
  }

  /** A distribution by its name in the {@value #NAMESPACE} namespace (empty when not reported). */
  public DistributionResult distribution(String name) {
    DistributionResult d = distributions.get(name);
    return d == null || d.getCount() == 0 ? DistributionResult.IDENTITY_ELEMENT : d;
  }

  private static DistributionResult merge(DistributionResult a, DistributionResult b) {
    if (a.getCount() == 0) {
      return b;
    }
    if (b.getCount() == 0) {
      return a;
    }
    return DistributionResult.create(
        a.getSum() + b.getSum(),
        a.getCount() + b.getCount(),
        Math.min(a.getMin(), b.getMin()),
        Math.max(a.getMax(), b.getMax()));
  }

  /** One line: {@code inferences= predictions= failures= batches= mean_batch= ...}. */
  @Override
  public String toString() {
    StringBuilder line =
        new StringBuilder()
            .append("inferences=")
            .append(inferences())
            .append(" predictions=")
            .append(predictions())
            .append(" failures=")
            .append(failures());
    Map<String, Long> byStage = failuresByStage();
    if (!byStage.isEmpty()) {
      line.append(" failures_by_stage=").append(byStage);
    }
    line.append(" batches=")
        .append(batches())
        .append(String.format(Locale.ROOT, " mean_batch=%.1f", meanBatchSize()))
        .append(String.format(Locale.ROOT, " batch_latency_ms=%.2f", meanBatchLatencyMillis()))
        .append(" model_load_ms=")
        .append(maxModelLoadMillis());
    if (modelRefreshes() > 0) {
      line.append(" model_refreshes=").append(modelRefreshes());
    }
    Map<String, Long> byModel = predictionsByModel();
    if (!byModel.isEmpty()) {
      line.append(" models=").append(byModel);
    }
    return line.toString();
  }
}
