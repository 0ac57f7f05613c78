package dev.xinfer.runtime.direct;

import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.concurrent.ExecutionException;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** Which failed bundles leave the shared SDK worker in service. */
@RunWith(JUnit4.class)
public class PythonStageFnTest {
  private static final Exception PYTHON_ERROR =
      new ExecutionException(
          new RuntimeException(
              "Error received from SDK harness for instruction 7: Traceback (most recent call"
                  + " last): ... RecordError: record {id=4242}: field 'features' has 10 values"));

  @Test
  public void aPythonErrorTheWorkerReportedKeepsIt() {
    assertTrue(PythonStageFn.reportedByALiveWorker(PYTHON_ERROR, List.of()));
  }

  @Test
  public void aWorkerThePoolSaysDiedIsRetired() {
    assertFalse(
        PythonStageFn.reportedByALiveWorker(
            PYTHON_ERROR, List.of("xinfer worker pool: SDK worker 3 (pid 123) died (signal 9)")));
  }

  @Test
  public void aLostConnectionRetiresIt() {
    assertFalse(
        PythonStageFn.reportedByALiveWorker(
            new IllegalStateException(
                "io.grpc.StatusRuntimeException: CANCELLED: Multiplexer hanging up"),
            List.of()));
  }

  @Test
  public void anyOtherFailureRetiresIt() {
    assertFalse(
        PythonStageFn.reportedByALiveWorker(new IllegalStateException("no response"), List.of()));
  }
}
