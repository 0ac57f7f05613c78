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
public class TeardownNoiseTest {
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

  /** What reaches the console of what {@code print} writes through the filter. */
  private static String throughTheFilter(java.util.function.Consumer<PrintStream> print) {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    PrintStream err = TeardownNoise.filtering(new PrintStream(bytes, true));
    print.accept(err);
    err.flush();
    return bytes.toString(Charset.defaultCharset());
  }

  private static String printed(Throwable... traces) {
    return throughTheFilter(
        err -> {
          err.println("before");
          for (Throwable t : traces) {
            t.printStackTrace(err);
          }
          err.println("after");
        });
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
    assertTrue(out, out.contains("\tat dev.xinfer.runtime.TeardownNoiseTest"));
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
    assertTrue(TeardownNoise.isOrphanChannelReport(orphan));
    LogRecord other = new LogRecord(Level.SEVERE, "was not shutdown properly");
    other.setLoggerName("org.apache.beam.runners.flink.FlinkPipelineRunner");
    assertFalse(TeardownNoise.isOrphanChannelReport(other));
  }

  private static final String CLEANER_LINE =
      "04:00:00.000 [Spark Context Cleaner] ERROR ContextCleaner - Error cleaning broadcast 3";

  private static String printedLines(String... lines) {
    return throughTheFilter(err -> java.util.Arrays.stream(lines).forEach(err::println));
  }

  @Test
  public void theCleanersInterruptedCleaningIsDroppedWithItsFrames() {
    assertEquals(
        "before" + System.lineSeparator() + "after" + System.lineSeparator(),
        printedLines(
            "before",
            CLEANER_LINE,
            "java.lang.InterruptedException",
            "\tat java.base/java.util.concurrent.locks.AbstractQueuedSynchronizer.tryAcquireSharedNanos"
                + "(AbstractQueuedSynchronizer.java:1081)",
            "\tat org.apache.spark.ContextCleaner$$anon$1.run(ContextCleaner.scala:79)",
            "after"));
  }

  @Test
  public void aCleaningThatFailedOtherwiseIsPrintedWhole() {
    String[] report = {
      CLEANER_LINE,
      "org.apache.spark.SparkException: Exception thrown in awaitResult: ",
      "\tat org.apache.spark.util.ThreadUtils$.awaitResult(ThreadUtils.scala:301)",
      "after"
    };
    assertEquals(
        String.join(System.lineSeparator(), report) + System.lineSeparator(), printedLines(report));
  }

  /**
   * The report as Spark and slf4j-simple really print it: a real local Spark context's cleaner
   * cleans a broadcast on an interrupted thread, as its cleaning thread does when the cleaner's
   * stop interrupts it; printed whole without the filter, nothing of it with.
   */
  @Test
  public void sparksRealReportIsDropped() throws Exception {
    org.apache.spark.api.java.JavaSparkContext spark =
        new org.apache.spark.api.java.JavaSparkContext(
            new org.apache.spark.SparkConf(false)
                .setMaster("local[1]")
                .setAppName("xinfer-teardown-noise-test")
                .set("spark.ui.enabled", "false")
                .set("spark.driver.bindAddress", "127.0.0.1")
                .set("spark.driver.host", "127.0.0.1"));
    PrintStream stderr = System.err;
    try {
      org.apache.spark.ContextCleaner cleaner = spark.sc().cleaner().get();
      ByteArrayOutputStream unfiltered = new ByteArrayOutputStream();
      ByteArrayOutputStream filtered = new ByteArrayOutputStream();
      System.setErr(new PrintStream(unfiltered, true));
      cleanOnAnInterruptedThread(cleaner, spark.broadcast(new byte[16]).id());
      System.setErr(TeardownNoise.filtering(new PrintStream(filtered, true)));
      System.err.println("before");
      cleanOnAnInterruptedThread(cleaner, spark.broadcast(new byte[16]).id());
      System.err.println("after");
      System.err.flush();
      String report = unfiltered.toString(Charset.defaultCharset());
      assertTrue(report, report.contains("Error cleaning broadcast"));
      assertTrue(report, report.contains(System.lineSeparator() + TeardownNoise.INTERRUPTED));
      assertEquals(
          "before" + System.lineSeparator() + "after" + System.lineSeparator(),
          filtered.toString(Charset.defaultCharset()));
    } finally {
      System.setErr(stderr);
      spark.stop();
    }
  }

  private static void cleanOnAnInterruptedThread(
      org.apache.spark.ContextCleaner cleaner, long broadcast) {
    Thread.currentThread().interrupt();
    try {
      cleaner.doCleanupBroadcast(broadcast, /* blocking, Spark's default */ true);
    } finally {
      Thread.interrupted();
    }
  }
}
