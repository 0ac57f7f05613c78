package dev.xinfer.runtime;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.Charset;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

@RunWith(JUnit4.class)
public class HarnessTeardownNoiseTest {
  /**
   * What FnHarness.main prints at the end of every job (text as printed by the Beam of
   * BeamHooks.BEAM_VERSION).
   */
  private static Throwable teardownReport() {
    IllegalStateException cause =
        new IllegalStateException(
            "Logging stream terminated unexpectedly with success before it was closed by the "
                + "client.");
    return new RuntimeException(cause);
  }

  private static String printed(Throwable... traces) {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    PrintStream err = HarnessTeardownNoise.filtering(new PrintStream(bytes, true));
    err.println("before");
    for (Throwable t : traces) {
      t.printStackTrace(err);
    }
    err.println("after");
    err.flush();
    return bytes.toString(Charset.defaultCharset());
  }

  @Test
  public void theTeardownReportIsDroppedWithItsFramesAndCause() {
    assertEquals(
        "before" + System.lineSeparator() + "after" + System.lineSeparator(),
        printed(teardownReport()));
  }

  @Test
  public void anyOtherTraceIsPrintedWhole() {
    Throwable failure =
        new RuntimeException(
            new IllegalStateException(
                "Logging stream terminated unexpectedly before it was closed by the client with "
                    + "error: UNAVAILABLE"));
    String out = printed(teardownReport(), failure);
    assertTrue(out, out.contains("with error: UNAVAILABLE"));
    assertTrue(out, out.contains("\tat dev.xinfer.runtime.HarnessTeardownNoiseTest"));
    assertFalse(out, out.contains("with success"));
  }

  @Test
  public void onlyGrpcsOrphanChannelReportsAreFiltered() {
    LogRecord orphan =
        new LogRecord(
            Level.SEVERE,
            "*~*~*~ Previous channel ManagedChannelImpl{logId=1} was not shutdown properly!!!");
    orphan.setLoggerName(
        "org.apache.beam.vendor.grpc.v1p60p1.io.grpc.internal.ManagedChannelOrphanWrapper");
    assertTrue(HarnessTeardownNoise.isOrphanChannelReport(orphan));
    LogRecord other = new LogRecord(Level.SEVERE, "was not shutdown properly");
    other.setLoggerName("org.apache.beam.runners.flink.FlinkPipelineRunner");
    assertFalse(HarnessTeardownNoise.isOrphanChannelReport(other));
  }
}
