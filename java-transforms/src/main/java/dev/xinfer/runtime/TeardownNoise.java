package dev.xinfer.runtime;

import java.io.ByteArrayOutputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.Charset;
import java.util.List;
import java.util.logging.ConsoleHandler;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogManager;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.apache.beam.sdk.annotations.Internal;

/**
 * Keeps the reports that Beam's embedded Java SDK harness and Spark print at the end of a job that
 * succeeded off the user's console; everything else, failures included, is printed as before.
 *
 * <ul>
 *   <li>{@code FnHarness.main} prints, with {@code printStackTrace}, the {@code
 *       IllegalStateException: Logging stream terminated unexpectedly with success before it was
 *       closed by the client}: Beam closes the job's logging server before the harness it serves
 *       ({@code DefaultJobBundleFactory.WrappedSdkHarnessClient.close}), so the harness always sees
 *       its logging stream end first. Only that exact report, with its frames, is dropped from
 *       {@code System.err}; the "with error" variant, which means a real failure, is printed.
 *   <li>{@code BeamFnLoggingClient.flushFinalLogs} replays the harness's last log records through
 *       {@code java.util.logging}'s root logger after re-reading the JUL configuration, among them
 *       gRPC's {@code ManagedChannelOrphanWrapper} reports ({@code Previous channel ... was not
 *       shutdown properly!!!}) of the in-process channels Beam's teardown leaves to the garbage
 *       collector. A JUL configuration class ({@link Configuration}) keeps the console handler and
 *       filters those records only; log configuration is re-read by the harness, so a level set in
 *       code would not last. A JUL configuration the user names ({@code
 *       -Djava.util.logging.config.file} or {@code .class}) is left alone.
 *   <li>Spark 3.2's {@code ContextCleaner.stop()}, when Beam stops the job's Spark context, can
 *       interrupt the cleaning thread after it took a garbage-collected broadcast or RDD off its
 *       queue and before it cleans it; the cleaning's request to the block manager then fails with
 *       an {@code InterruptedException}, which the cleaner logs as an ERROR ({@code Error cleaning
 *       broadcast 3}, about one Spark batch run in 20 here). Spark means the stop's interrupt to be
 *       quiet (SPARK-6132) but catches it one level too deep. That report, an {@code Error
 *       cleaning} line of {@code ContextCleaner} followed by a bare {@code
 *       java.lang.InterruptedException} and its frames, is dropped from {@code System.err} (where
 *       slf4j-simple writes); a cleaning that failed for any other reason is printed.
 * </ul>
 *
 * <p>The Beam reports are Beam-version specific: see {@link BeamHooks}.
 */
@Internal
public final class TeardownNoise {
  static final String LOGGING_STREAM_ENDED =
      "java.lang.RuntimeException: java.lang.IllegalStateException: Logging stream terminated "
          + "unexpectedly with success before it was closed by the client.";
  private static final String CAUSE =
      "Caused by: java.lang.IllegalStateException: Logging stream terminated unexpectedly with "
          + "success before it was closed by the client.";
  private static final String ORPHAN_LOGGER = "io.grpc.internal.ManagedChannelOrphanWrapper";

  /** The first line of Spark's ContextCleaner report of a failed cleaning, as slf4j prints it. */
  private static final java.util.regex.Pattern CLEANING_FAILED =
      java.util.regex.Pattern.compile(".*\\bContextCleaner:? -? ?Error cleaning [A-Za-z]+ \\d+");

  /** The exception a cleaning interrupted by the cleaner's stop reports. */
  static final String INTERRUPTED = "java.lang.InterruptedException";

  /** The classes whose reports are filtered: checked on a Beam upgrade by {@link BeamHooks}. */
  static final List<String> SOURCES =
      List.of(
          "org.apache.beam.fn.harness.FnHarness",
          "org.apache.beam.fn.harness.logging.BeamFnLoggingClient",
          "org.apache.beam.vendor.grpc.v1p60p1." + ORPHAN_LOGGER);

  private static boolean installed;

  private TeardownNoise() {}

  /** Installs both filters in this JVM, once. */
  public static synchronized void install() {
    if (installed) {
      return;
    }
    installed = true;
    System.setErr(filtering(System.err));
    if (System.getProperty("java.util.logging.config.file") == null
        && System.getProperty("java.util.logging.config.class") == null) {
      System.setProperty("java.util.logging.config.class", Configuration.class.getName());
      try {
        LogManager.getLogManager().readConfiguration();
      } catch (IOException e) {
        // JUL keeps its current configuration; the harness's teardown reports are printed.
      }
    }
  }

  /** {@code err} without the logging-stream teardown report. */
  static PrintStream filtering(PrintStream err) {
    return new PrintStream(new TeardownReportFilter(err), true, Charset.defaultCharset());
  }

  /** Whether a JUL record is gRPC's report of a channel Beam's teardown left unclosed. */
  static boolean isOrphanChannelReport(LogRecord record) {
    String logger = record.getLoggerName();
    String message = record.getMessage();
    return logger != null
        && logger.endsWith(ORPHAN_LOGGER)
        && message != null
        && message.contains("was not shutdown properly");
  }

  /**
   * java.util.logging's default configuration (a console handler at INFO on the root logger) with
   * gRPC's orphan-channel reports filtered; JUL instantiates it on each {@code
   * readConfiguration()}.
   */
  public static final class Configuration {
    public Configuration() {
      Logger root = Logger.getLogger("");
      for (Handler handler : root.getHandlers()) {
        root.removeHandler(handler);
      }
      root.setLevel(Level.INFO);
      Handler console = new ConsoleHandler();
      console.setLevel(Level.INFO);
      console.setFilter(record -> !isOrphanChannelReport(record));
      root.addHandler(console);
    }
  }

  /**
   * Passes lines through, except the teardown reports: the logging-stream report (its first line,
   * the frames and the cause that follow it) and the cleaner's interrupted cleaning (its line, held
   * until the next shows whether an {@code InterruptedException} follows, and its frames). A line
   * is held until its end (or a flush) so that the decision is made on whole lines.
   */
  static final class TeardownReportFilter extends FilterOutputStream {
    private final ByteArrayOutputStream line = new ByteArrayOutputStream();
    private byte[] heldCleaningLine;
    private boolean dropping;

    TeardownReportFilter(OutputStream out) {
      super(out);
    }

    @Override
    public synchronized void write(int b) throws IOException {
      line.write(b);
      if (b == '\n') {
        endLine();
      }
    }

    @Override
    public synchronized void write(byte[] b, int off, int len) throws IOException {
      int start = off;
      for (int i = off; i < off + len; i++) {
        if (b[i] == '\n') {
          line.write(b, start, i + 1 - start);
          endLine();
          start = i + 1;
        }
      }
      line.write(b, start, off + len - start);
    }

    @Override
    public synchronized void flush() throws IOException {
      // A held cleaner line waits for the line after it, which its logger prints next.
      if (line.size() > 0 && !dropping && heldCleaningLine == null) {
        line.writeTo(out);
        line.reset();
      }
      out.flush();
    }

    private void endLine() throws IOException {
      String text = line.toString(Charset.defaultCharset()).stripTrailing();
      if (heldCleaningLine != null) {
        byte[] held = heldCleaningLine;
        heldCleaningLine = null;
        if (text.equals(INTERRUPTED)) {
          dropping = true; // the held line, this one and the frames
          line.reset();
          return;
        }
        out.write(held);
      }
      if (text.equals(LOGGING_STREAM_ENDED)) {
        dropping = true;
      } else if (dropping
          && !(text.startsWith("\tat ") || text.startsWith("\t... ") || text.equals(CAUSE))) {
        dropping = false;
      }
      if (!dropping && CLEANING_FAILED.matcher(text).matches()) {
        heldCleaningLine = line.toByteArray();
      } else if (!dropping) {
        line.writeTo(out);
      }
      line.reset();
    }
  }
}
