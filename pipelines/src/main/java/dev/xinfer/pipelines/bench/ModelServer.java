package dev.xinfer.pipelines.bench;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The benchmark's model server process ({@code python -m xinfer_bench serve}), started on a free
 * port of 127.0.0.1 and stopped by {@link #close} (SIGTERM, then a kill after 10 s). A shutdown
 * hook stops it too if the JVM exits first; and the server exits by itself when this JVM is gone.
 */
public final class ModelServer implements AutoCloseable {
  private static final String READY = "xinfer-bench-server ready ";
  private static final Pattern URL = Pattern.compile("\"url\": \"([^\"]+)\"");
  private static final long START_TIMEOUT_SECONDS = 120;

  private final Process process;
  private final String url;
  private final Thread hook;

  private ModelServer(Process process, String url) {
    this.process = process;
    this.url = url;
    this.hook = new Thread(this::stop, "model-server-stop");
    Runtime.getRuntime().addShutdownHook(hook);
  }

  /** Starts the server for {@code model} with {@code python} and waits for its ready line. */
  public static ModelServer start(String python, String model)
      throws IOException, InterruptedException {
    List<String> command =
        List.of(
            python,
            "-m",
            "xinfer_bench",
            "serve",
            "--model",
            model,
            "--port",
            "0",
            "--threads",
            "1",
            "--parent-pid",
            Long.toString(ProcessHandle.current().pid()));
    Process process =
        new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
    // The ready line (or the end of stdout) arrives on a reader thread, which then goes on
    // reading so that the server never blocks on a full pipe.
    BlockingQueue<String> first = new ArrayBlockingQueue<>(1);
    Thread reader =
        new Thread(
            () -> {
              try (BufferedReader lines =
                  new BufferedReader(
                      new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                boolean ready = false;
                for (String line = lines.readLine(); line != null; line = lines.readLine()) {
                  if (!ready && line.startsWith(READY)) {
                    ready = true;
                    first.offer(line);
                  } else {
                    System.err.println("model server: " + line);
                  }
                }
              } catch (IOException e) {
                // the process ended
              }
              first.offer("");
            },
            "model-server-stdout");
    reader.setDaemon(true);
    reader.start();
    String line = first.poll(START_TIMEOUT_SECONDS, TimeUnit.SECONDS);
    Matcher url = URL.matcher(line == null ? "" : line);
    if (!url.find()) {
      process.destroyForcibly();
      throw new IllegalStateException(
          "the model server ("
              + String.join(" ", command)
              + ") "
              + (line == null
                  ? "did not report ready within " + START_TIMEOUT_SECONDS + " s"
                  : "exited before it was ready (exit " + process.waitFor() + ")")
              + "; its errors are above. Is xinfer's Python package on that interpreter's path"
              + " (PYTHONPATH=python-expansion/src, or pip install -e python-expansion)?");
    }
    return new ModelServer(process, url.group(1));
  }

  /** The server's {@code /predict} URL, {@code http://127.0.0.1:PORT/predict}. */
  public String url() {
    return url;
  }

  @Override
  public void close() {
    stop();
    try {
      Runtime.getRuntime().removeShutdownHook(hook);
    } catch (IllegalStateException e) {
      // the JVM is shutting down: the hook runs stop() anyway
    }
  }

  private void stop() {
    if (!process.isAlive()) {
      return;
    }
    process.destroy();
    try {
      if (!process.waitFor(10, TimeUnit.SECONDS)) {
        process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
      }
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
    }
  }
}
