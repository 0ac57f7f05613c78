package dev.xinfer.testing;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * An {@code xinfer-expansion-service} started apart from the JVM's own services, as a user starts
 * one by hand: its own process, port, worker pool and secret file. Stopped (by pid) on close.
 */
public final class HandStartedServices implements AutoCloseable {
  private static final Pattern ADDRESS = Pattern.compile("\"expansion_service\":\\s*\"([^\"]+)\"");

  private final Process process;
  private final String address;
  private final Path secretFile;

  private HandStartedServices(Process process, String address, Path secretFile) {
    this.process = process;
    this.address = address;
    this.secretFile = secretFile;
  }

  /** Starts the services with {@code python}; the secret file is created in {@code dir}. */
  public static HandStartedServices start(String python, Path dir) throws Exception {
    Path secretFile = dir.resolve("expansion.secret");
    List<String> command =
        new ArrayList<>(
            List.of(
                python,
                "-m",
                "xinfer.services",
                "--port",
                "0",
                "--secret-file",
                secretFile.toString(),
                "--parent-pid",
                Long.toString(ProcessHandle.current().pid())));
    Process process =
        new ProcessBuilder(command)
            .redirectError(dir.resolve("hand-started-services.log").toFile())
            .start();
    CompletableFuture<String> ready = new CompletableFuture<>();
    Thread reader =
        new Thread(
            () -> {
              try (BufferedReader out =
                  new BufferedReader(
                      new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = out.readLine()) != null) {
                  Matcher m = ADDRESS.matcher(line);
                  if (m.find()) {
                    ready.complete(m.group(1));
                  }
                }
              } catch (IOException e) {
                ready.completeExceptionally(e);
              }
              ready.completeExceptionally(new IOException("the services exited"));
            });
    reader.setDaemon(true);
    reader.start();
    try {
      return new HandStartedServices(process, ready.get(120, TimeUnit.SECONDS), secretFile);
    } catch (Exception e) {
      process.destroyForcibly();
      throw e;
    }
  }

  public String address() {
    return address;
  }

  public Path secretFile() {
    return secretFile;
  }

  public long pid() {
    return process.pid();
  }

  @Override
  public void close() throws InterruptedException {
    process.destroy();
    if (!process.waitFor(10, TimeUnit.SECONDS)) {
      process.descendants().forEach(ProcessHandle::destroyForcibly);
      process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
    }
  }
}
