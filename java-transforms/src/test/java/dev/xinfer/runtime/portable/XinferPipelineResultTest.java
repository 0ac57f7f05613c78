package dev.xinfer.runtime.portable;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.concurrent.CompletableFuture;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.sdk.PipelineResult;
import org.junit.Test;

public class XinferPipelineResultTest {
  @Test(timeout = 10_000)
  public void metricsOfARunningJobWithoutLiveMetricsFailAtOnceRatherThanBlock() {
    CompletableFuture<PortablePipelineResult> running = new CompletableFuture<>();
    XinferPipelineResult result =
        new XinferPipelineResult("FlinkRunner", running, () -> false, () -> null);

    assertEquals(PipelineResult.State.RUNNING, result.getState());
    UnsupportedOperationException e =
        assertThrows(UnsupportedOperationException.class, result::metrics);
    assertTrue(e.getMessage(), e.getMessage().contains("FlinkRunner reports no metrics"));
    // A job that could not be cancelled says so, and is still not waited on.
    assertThrows(UnsupportedOperationException.class, result::cancel);
    assertThrows(UnsupportedOperationException.class, result::metrics);
  }
}
