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
 * Keeps the two reports that Beam's embedded Java SDK harness prints at the end of every job, when
 * nothing failed, off the user's console; everything else, failures included, is printed as before.
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
 * </ul>
 *
 * <p>Both are Beam-version specific: see {@link BeamHooks}.
 */
@Internal
public final class HarnessTeardownNoise {
  static final String LOGGING_STREAM_ENDED =
      "java.lang.RuntimeException: java.lang.IllegalStateException: Logging stream terminated "
          + "unexpectedly with success before it was closed by the client.";
  private static final String CAUSE =
      "Caused by: java.lang.IllegalStateException: Logging stream terminated unexpectedly with "
          + "success before it was closed by the client.";
  private static final String ORPHAN_LOGGER = "io.grpc.internal.ManagedChannelOrphanWrapper";

  /** The classes whose reports are filtered: checked on a Beam upgrade by {@link BeamHooks}. */
  static final List<String> SOURCES =
      List.of(
          "org.apache.beam.fn.harness.FnHarness",
          "org.apache.beam.fn.harness.logging.BeamFnLoggingClient",
          "org.apache.beam.vendor.grpc.v1p60p1." + ORPHAN_LOGGER);

  private static boolean installed;

  private HarnessTeardownNoise() {}

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
   * Passes lines through, except the logging-stream teardown report: its first line, the frames and
   * the cause that follow it. A line is held until its end (or a flush) so that the decision is
   * made on whole lines.
   */
  static final class TeardownReportFilter extends FilterOutputStream {
    private final ByteArrayOutputStream line = new ByteArrayOutputStream();
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
      if (line.size() > 0 && !dropping) {
        line.writeTo(out);
        line.reset();
      }
      out.flush();
    }

    private void endLine() throws IOException {
      String text = line.toString(Charset.defaultCharset()).stripTrailing();
      if (text.equals(LOGGING_STREAM_ENDED)) {
        dropping = true;
      } else if (dropping
          && !(text.startsWith("\tat ") || text.startsWith("\t... ") || text.equals(CAUSE))) {
        dropping = false;
      }
      if (!dropping) {
        line.writeTo(out);
      }
      line.reset();
    }
  }
}
