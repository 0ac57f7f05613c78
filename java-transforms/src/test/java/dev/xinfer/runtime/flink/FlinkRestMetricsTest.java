package dev.xinfer.runtime.flink;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;

import java.util.List;
import org.apache.beam.sdk.metrics.DistributionResult;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * How {@link FlinkRestMetrics} reads Flink's REST metric ids and values back into Beam's: the ids
 * as the embedded Flink's REST API lists them for a vertex of the streaming demo ({@code
 * <subtask>.<operator>.<namespace>_<name>}).
 */
@RunWith(JUnit4.class)
public class FlinkRestMetricsTest {
  private static final String STAGE = "[1]external0/RowInference/Inference/ParDo(BlockInference)";

  private static final List<String> IDS =
      List.of(
          "0.numRecordsInPerSecond",
          "0.accumulateBusyTimeMs",
          "0." + STAGE + ".numRecordsIn",
          "0." + STAGE + ".xinfer_num_inferences",
          "0." + STAGE + ".xinfer_predictions_by_model/digits-mlp",
          "0." + STAGE + ".xinfer_inference_request_batch_size",
          "0." + STAGE + ".External_0_PCollection_PCollection_1_metric_element_count_v1",
          "0.[4]{Predict__Format__WritePredictions}.sink_elements_written",
          "1." + STAGE + ".xinfer_num_inferences");

  @Test
  public void aDistributionGaugeReadsBackAsItsDistribution() {
    DistributionResult d = DistributionResult.create(1234, 7, -3, 900);
    // The value Flink's REST API shows: the gauge value's toString().
    assertEquals(d, FlinkRestMetrics.parseDistribution(d.toString()));
    assertEquals(
        DistributionResult.create(10, 2, 4, 6),
        FlinkRestMetrics.parseDistribution("DistributionResult{sum=10, count=2, min=4, max=6}"));
  }

  @Test
  public void otherValuesAreNoDistribution() {
    assertNull(FlinkRestMetrics.parseDistribution("42"));
    assertNull(FlinkRestMetrics.parseDistribution("DistributionResult{sum=10, count=2}"));
    assertNull(FlinkRestMetrics.parseDistribution("GaugeResult{value=3}"));
  }

  @Test
  public void onlyOperatorsXinferMetricsAreRead() {
    assertEquals(
        List.of(
            "0." + STAGE + ".xinfer_num_inferences",
            "0." + STAGE + ".xinfer_predictions_by_model/digits-mlp",
            "0." + STAGE + ".xinfer_inference_request_batch_size",
            "1." + STAGE + ".xinfer_num_inferences"),
        FlinkRestMetrics.xinferMetricIds(IDS));
  }

  @Test
  public void anIdSplitsIntoTheOperatorAsStepAndXinfersName() {
    assertArrayEquals(
        new String[] {STAGE, "xinfer", "predictions_by_model/digits-mlp"},
        FlinkRestMetrics.split("0." + STAGE + ".xinfer_predictions_by_model/digits-mlp"));
    assertArrayEquals(
        new String[] {STAGE, "xinfer", "num_inferences"},
        FlinkRestMetrics.split("12." + STAGE + ".xinfer_num_inferences"));
    assertArrayEquals(
        new String[] {"[4]{Predict__Format}", "xinfer.kafka", "records_written"},
        FlinkRestMetrics.split("0.[4]{Predict__Format}.xinfer_kafka_records_written"));
    assertNull(FlinkRestMetrics.split("0." + STAGE + ".numRecordsIn"));
    assertNull(FlinkRestMetrics.split("0.xinfer_num_inferences"));
    assertNull(FlinkRestMetrics.split("0." + STAGE + ".xinfer_"));
  }
}
