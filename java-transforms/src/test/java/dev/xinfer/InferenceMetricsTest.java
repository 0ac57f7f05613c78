package dev.xinfer;

import static org.junit.Assert.assertEquals;

import java.lang.reflect.Proxy;
import java.util.List;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.metrics.DistributionResult;
import org.apache.beam.sdk.metrics.MetricKey;
import org.apache.beam.sdk.metrics.MetricName;
import org.apache.beam.sdk.metrics.MetricQueryResults;
import org.apache.beam.sdk.metrics.MetricResult;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.beam.sdk.metrics.MetricsFilter;
import org.junit.Test;

/** Which of a runner's values {@link InferenceMetrics} reads. */
public class InferenceMetricsTest {
  private static MetricKey key(String step, String name) {
    return MetricKey.create(step, MetricName.named(InferenceMetrics.NAMESPACE, name));
  }

  /**
   * The DirectRunner's case: its attempted values miss the bundles whose attempted metrics it had
   * not added yet when the run returned (53 of 64 inferences, seen in CI); its committed ones are
   * complete.
   */
  @Test
  public void committedValuesWhereTheRunnerHasThem() {
    InferenceMetrics metrics =
        InferenceMetrics.of(
            resultWith(
                List.of(
                    MetricResult.create(key("a", InferenceMetrics.NUM_INFERENCES), 40L, 29L),
                    MetricResult.create(key("b", InferenceMetrics.NUM_INFERENCES), 24L, 24L)),
                List.of(
                    MetricResult.create(
                        key("a", InferenceMetrics.BATCH_SIZE),
                        DistributionResult.create(64, 4, 16, 16),
                        DistributionResult.create(48, 3, 16, 16)))));
    assertEquals(64, metrics.inferences());
    assertEquals(4, metrics.batches());
    assertEquals(16.0, metrics.meanBatchSize(), 0.0);
  }

  /** Flink's and Spark's case: attempted values only. */
  @Test
  public void attemptedValuesWhereTheRunnerHasNoCommittedOnes() {
    InferenceMetrics metrics =
        InferenceMetrics.of(
            resultWith(
                List.of(
                    MetricResult.attempted(key("a", InferenceMetrics.NUM_INFERENCES), 40L),
                    MetricResult.attempted(key("b", InferenceMetrics.NUM_INFERENCES), 24L)),
                List.of(
                    MetricResult.attempted(
                        key("a", InferenceMetrics.BATCH_SIZE),
                        DistributionResult.create(64, 8, 1, 16)))));
    assertEquals(64, metrics.inferences());
    assertEquals(8, metrics.batches());
  }

  private static PipelineResult resultWith(
      List<MetricResult<Long>> counters, List<MetricResult<DistributionResult>> distributions) {
    MetricResults results =
        new MetricResults() {
          @Override
          public MetricQueryResults queryMetrics(MetricsFilter filter) {
            return MetricQueryResults.create(counters, distributions, List.of(), List.of());
          }
        };
    // A finished run whose metrics are these.
    return (PipelineResult)
        Proxy.newProxyInstance(
            PipelineResult.class.getClassLoader(),
            new Class<?>[] {PipelineResult.class},
            (proxy, method, args) ->
                method.getName().equals("metrics") ? results : PipelineResult.State.DONE);
  }
}
