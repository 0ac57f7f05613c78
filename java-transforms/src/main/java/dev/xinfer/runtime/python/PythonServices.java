package dev.xinfer.runtime.python;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.PrivateTempDirs;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.util.ReleaseInfo;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Python expansion service and worker pool that xinfer starts and owns.
 *
 * <p>One process ({@code python -m xinfer.services}) serves both on 127.0.0.1, on ports it picks
 * and reports. It is started once per JVM ({@link #shared}), stopped by a shutdown hook, and it
 * stops itself if this JVM dies without running the hook.
 *
 * <p>The services serve only this JVM: each start makes a random secret ({@link ServiceSecret}) and
 * hands it to the process on its standard input; the expansion service refuses any call without it,
 * and the worker pool any start request without its own. The log is in a folder that only this user
 * can read, removed when the services stop.
 */
@Internal
public final class PythonServices implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(PythonServices.class);
  private static final String READY_PREFIX = "XINFER_READY ";

  /**
   * A line the services print for the operator (a Python worker that died), logged as a warning.
   */
  private static final String NOTICE_PREFIX = "XINFER_NOTICE ";

  private static final Pattern READY_FIELD =
      Pattern.compile("\"(expansion_service|worker_pool|beam_version)\":\\s*\"([^\"]+)\"");
  private static final int LOG_TAIL_LINES = 30;
  private static final Pattern MODULE_NAME =
      Pattern.compile("[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*");

  /** Started services by what they were started with (worker pool, its secret, modules). */
  private static final Map<String, PythonServices> SHARED = new HashMap<>();

  private volatile Process process;
  private final Path logFile;
  private final String secret;
  private final String expansionService;
  private final String workerPool;

  /** What restarts the services as they were: command, secrets, ports, ready timeout. */
  private final List<String> command;

  private final @Nullable String stdinPoolSecret;
  private final boolean ownPool;
  private final Duration readyTimeout;
  private volatile boolean closed;

  /** Restarts after an unexpected exit: at most this many within {@link #RESTART_WINDOW}. */
  static final int MAX_RESTARTS = 5;

  static final Duration RESTART_WINDOW = Duration.ofMinutes(5);

  private PythonServices(
      Process process,
      Path logFile,
      String secret,
      String expansionService,
      String workerPool,
      List<String> command,
      @Nullable String stdinPoolSecret,
      boolean ownPool,
      Duration readyTimeout) {
    this.process = process;
    this.logFile = logFile;
    this.secret = secret;
    this.expansionService = expansionService;
    this.workerPool = workerPool;
    this.command = command;
    this.stdinPoolSecret = stdinPoolSecret;
    this.ownPool = ownPool;
    this.readyTimeout = readyTimeout;
  }

  /**
   * The services for this JVM, started on first use with the options' Python interpreter and worker
   * pool ({@code --xinferWorkerPool}), then shared by every pipeline that asks for the same.
   */
  public static synchronized PythonServices shared(XinferOptions options) {
    @Nullable String pool = options.getXinferWorkerPool();
    @Nullable String poolSecret = null;
    if (pool != null) {
      String file = options.getXinferWorkerPoolSecretFile();
      if (file == null) {
        throw new IllegalArgumentException(
            "--xinferWorkerPool="
                + pool
                + " needs --xinferWorkerPoolSecretFile: the secret file the pool was started with "
                + "(xinfer-worker-pool --secret-file F; ./xinfer cluster up writes "
                + ".xinfer/clusters/<flink|spark>/pool.secret).");
      }
      poolSecret = ServiceSecret.read(file, "--xinferWorkerPoolSecretFile");
    }
    List<String> allowedModules = allowedModules(options.getXinferAllowedModules());
    String key = pool + " " + poolSecret + " " + allowedModules;
    PythonServices services = SHARED.get(key);
    if (services != null && !services.process.isAlive()) {
      services.close(); // gone and not (yet) restarted: start fresh ones below
    }
    if (services == null || !services.process.isAlive()) {
      String python = resolvePython(options.getXinferPython());
      services =
          start(
              python,
              pool,
              poolSecret,
              allowedModules,
              Duration.ofSeconds(options.getXinferServiceStartTimeoutSeconds()));
      SHARED.put(key, services);
      Runtime.getRuntime()
          .addShutdownHook(new Thread(services::close, "xinfer-python-services-stop"));
    }
    return services;
  }

  /** Starts the services with {@code python} and waits until they report ready. */
  public static PythonServices start(String python, Duration readyTimeout) {
    return start(python, null, null, List.of(), readyTimeout);
  }

  /**
   * Starts the services with {@code python}; with {@code workerPool} (HOST:PORT) the expansion
   * service sends the Python stages there, with the pool's secret {@code workerPoolSecret}, instead
   * of to a pool of its own. Hooks and model classes may come from {@code allowedModules} (besides
   * xinfer's examples).
   */
  public static PythonServices start(
      String python,
      @Nullable String workerPool,
      @Nullable String workerPoolSecret,
      List<String> allowedModules,
      Duration readyTimeout) {
    List<String> command = new ArrayList<>();
    command.addAll(
        List.of(
            python,
            "-m",
            "xinfer.services",
            "--secret-stdin",
            "--parent-pid",
            Long.toString(ProcessHandle.current().pid())));
    if (workerPool != null) {
      checkReachable(workerPool, Duration.ofSeconds(5), "worker pool", "xinfer-worker-pool");
      command.addAll(List.of("--worker-pool", workerPool));
    }
    if (!allowedModules.isEmpty()) {
      command.addAll(List.of("--allowed-modules", String.join(",", allowedModules)));
    }
    String secret = ServiceSecret.generate();
    // The pool of the services' own gets its secret from here too, so that services restarted
    // after a crash take the same one (running jobs' environments carry it).
    String stdinPoolSecret = workerPool == null ? ServiceSecret.generate() : workerPoolSecret;
    Path logFile = PrivateTempDirs.create("xinfer-services-log-").resolve("python-services.log");
    Launched launched = launch(python, command, secret, stdinPoolSecret, logFile, readyTimeout);
    String expansionService = launched.fields.get("expansion_service");
    String servedPool = launched.fields.get("worker_pool");
    LOG.info(
        "xinfer Python services ready: expansion service {}, worker pool {}",
        expansionService,
        servedPool);
    PythonServices services =
        new PythonServices(
            launched.process,
            logFile,
            secret,
            expansionService,
            servedPool,
            List.copyOf(command),
            stdinPoolSecret,
            workerPool == null,
            readyTimeout);
    services.supervise();
    return services;
  }

  /** A started, ready services process and the fields of its ready line. */
  private static final class Launched {
    final Process process;
    final Map<String, String> fields;

    Launched(Process process, Map<String, String> fields) {
      this.process = process;
      this.fields = fields;
    }
  }

  /**
   * Starts {@code command}, hands it the secrets on standard input, waits for its ready line and
   * checks its Beam version.
   */
  private static Launched launch(
      String python,
      List<String> command,
      String secret,
      @Nullable String stdinPoolSecret,
      Path logFile,
      Duration readyTimeout) {
    Process process;
    try {
      ProcessBuilder builder =
          new ProcessBuilder(command)
              .redirectError(ProcessBuilder.Redirect.appendTo(logFile.toFile()));
      Map<String, String> env = builder.environment();
      env.putIfAbsent("TF_CPP_MIN_LOG_LEVEL", "2");
      env.put("PYTHONUNBUFFERED", "1");
      process = builder.start();
      // The secrets on the process's standard input: never in a file, a command line or a log.
      try (OutputStream in = process.getOutputStream()) {
        in.write(
            (secret + "\n" + (stdinPoolSecret == null ? "" : stdinPoolSecret) + "\n")
                .getBytes(StandardCharsets.UTF_8));
      } catch (IOException e) {
        // The process died at once; the ready wait below reports it with its log.
      }
    } catch (IOException e) {
      throw new IllegalStateException(
          String.format(
              "xinfer could not start the Python services: tried `%s` and got %s. Install "
                  + "xinfer's Python package (./xinfer setup, or pip install ./python-expansion) "
                  + "and point --xinferPython or $XINFER_PYTHON at that interpreter.",
              String.join(" ", command), e.getMessage()),
          e);
    }
    LOG.info("Starting xinfer Python services: {} (log: {})", String.join(" ", command), logFile);
    CompletableFuture<String> ready = new CompletableFuture<>();
    Thread reader = new Thread(() -> readStdout(process, ready), "xinfer-python-services-stdout");
    reader.setDaemon(true);
    reader.start();
    String line;
    try {
      line = ready.get(readyTimeout.toMillis(), TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      destroy(process);
      throw new IllegalStateException(
          String.format(
              "xinfer's Python services did not report ready within %d s (`%s`). Raise "
                  + "--xinferServiceStartTimeoutSeconds on a slow machine. Log %s ends:%n%s",
              readyTimeout.toSeconds(), String.join(" ", command), logFile, tail(logFile)));
    } catch (ExecutionException | InterruptedException e) {
      destroy(process);
      throw new IllegalStateException(
          String.format(
              "xinfer's Python services exited before they were ready (`%s`, exit code %s). "
                  + "If the log says \"No module named xinfer\", install the package into that "
                  + "interpreter (./xinfer setup, or pip install ./python-expansion), or point "
                  + "--xinferPython or $XINFER_PYTHON at one that has it. Log %s ends:%n%s",
              String.join(" ", command),
              process.isAlive() ? "none yet" : Integer.toString(process.exitValue()),
              logFile,
              tail(logFile)),
          e);
    }
    Map<String, String> fields = new HashMap<>();
    Matcher m = READY_FIELD.matcher(line);
    while (m.find()) {
      fields.put(m.group(1), m.group(2));
    }
    String expansionService = fields.get("expansion_service");
    String servedPool = fields.get("worker_pool");
    String javaBeam = ReleaseInfo.getReleaseInfo().getSdkVersion();
    String pythonBeam = fields.get("beam_version");
    if (pythonBeam != null && !pythonBeam.equals(javaBeam)) {
      destroy(process);
      throw new IllegalStateException(
          String.format(
              "Version mismatch: the Java pipeline uses Beam %s but `%s` has apache-beam %s; "
                  + "both halves of a cross-language pipeline must run the same Beam version. "
                  + "Install apache-beam==%s there (./xinfer setup does), or point "
                  + "--xinferPython or $XINFER_PYTHON at an interpreter that has it.",
              javaBeam, python, pythonBeam, javaBeam));
    }
    if (expansionService == null || servedPool == null) {
      destroy(process);
      throw new IllegalStateException(
          "xinfer's Python services reported an unexpected ready line: "
              + line
              + ". The Java and Python halves of xinfer are from different versions; "
              + "re-run ./xinfer setup.");
    }
    return new Launched(process, fields);
  }

  /**
   * Watches the services process: if it exits while this JVM still uses it (killed, crashed), it is
   * started again on the same ports with the same secrets, so that running jobs' next SDK workers
   * and expansions find it where they were told; at most {@link #MAX_RESTARTS} times in {@link
   * #RESTART_WINDOW}.
   */
  private void supervise() {
    Thread watcher =
        new Thread(
            () -> {
              java.util.Deque<Long> restarts = new java.util.ArrayDeque<>();
              while (true) {
                Process watched = process;
                try {
                  watched.waitFor();
                } catch (InterruptedException e) {
                  return;
                }
                if (closed) {
                  return;
                }
                long now = System.nanoTime();
                while (!restarts.isEmpty()
                    && now - restarts.peekFirst() > RESTART_WINDOW.toNanos()) {
                  restarts.removeFirst();
                }
                if (restarts.size() >= MAX_RESTARTS) {
                  LOG.error(
                      "xinfer: the Python services exited {} times in {} min; not restarting "
                          + "them again. Pipelines that need them fail. Log {} ends:{}{}",
                      restarts.size() + 1,
                      RESTART_WINDOW.toMinutes(),
                      logFile,
                      System.lineSeparator(),
                      tail(logFile));
                  return;
                }
                restarts.addLast(now);
                LOG.warn(
                    "xinfer: the Python services (pid {}) exited with code {} while this JVM "
                        + "still uses them; starting them again on the same ports (expansion "
                        + "service {}, worker pool {}) with the same secrets (restart {}, at most "
                        + "{} in {} min)",
                    watched.pid(),
                    watched.exitValue(),
                    expansionService,
                    workerPool,
                    restarts.size(),
                    MAX_RESTARTS,
                    RESTART_WINDOW.toMinutes());
                try {
                  List<String> again = new ArrayList<>(command);
                  again.addAll(List.of("--port", port(expansionService)));
                  if (ownPool) {
                    again.addAll(List.of("--worker-pool-port", port(workerPool)));
                  }
                  Launched launched =
                      launch(command.get(0), again, secret, stdinPoolSecret, logFile, readyTimeout);
                  synchronized (PythonServices.this) {
                    if (closed) {
                      destroy(launched.process);
                      return;
                    }
                    process = launched.process;
                  }
                  LOG.warn("xinfer: the Python services are running again (pid {})", process.pid());
                } catch (RuntimeException e) {
                  LOG.error("xinfer: the Python services could not be started again: {}", e);
                  return;
                }
              }
            },
            "xinfer-python-services-supervisor");
    watcher.setDaemon(true);
    watcher.start();
  }

  private static String port(String hostPort) {
    return hostPort.substring(hostPort.lastIndexOf(':') + 1);
  }

  private static final java.util.Deque<java.util.Map.Entry<Long, String>> NOTICES =
      new java.util.ArrayDeque<>();

  private static synchronized void remember(String notice) {
    NOTICES.addLast(java.util.Map.entry(System.nanoTime(), notice));
    while (NOTICES.size() > 20) {
      NOTICES.removeFirst();
    }
  }

  /**
   * What the Python services of this JVM reported for the operator (a worker that died, and why)
   * since {@code sinceNanos} ({@link System#nanoTime}), oldest first: added to a job's failure,
   * whose own message (the runner's) says only that the worker's connection was lost.
   */
  public static synchronized List<String> noticesSince(long sinceNanos) {
    List<String> recent = new java.util.ArrayList<>();
    for (java.util.Map.Entry<Long, String> notice : NOTICES) {
      if (notice.getKey() - sinceNanos >= 0) {
        recent.add(notice.getValue());
      }
    }
    return recent;
  }

  /**
   * {@code message}, followed by the last notice since {@code sinceNanos} if there is one. When
   * {@code failure} looks like a lost worker (its connection cancelled or closed), waits up to
   * {@value #NOTICE_WAIT_MILLIS} ms for the pool's notice, which follows the worker's death by up
   * to its watch interval.
   */
  public static String withNotices(String message, long sinceNanos, Throwable failure) {
    List<String> notices = noticesSince(sinceNanos);
    long deadline =
        System.nanoTime() + java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(NOTICE_WAIT_MILLIS);
    while (notices.isEmpty() && looksLikeALostWorker(failure) && System.nanoTime() < deadline) {
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
      notices = noticesSince(sinceNanos);
    }
    if (notices.isEmpty()) {
      return message;
    }
    // The last notice says most: the worker that ended the job.
    return message + "\n  The Python worker pool reported: " + notices.get(notices.size() - 1);
  }

  static final long NOTICE_WAIT_MILLIS = 2000;

  /** Whether {@code failure} looks like a lost worker: its connection cancelled or closed. */
  public static boolean looksLikeALostWorker(Throwable failure) {
    for (Throwable t = failure; t != null; t = t.getCause() == t ? null : t.getCause()) {
      String text = String.valueOf(t.getMessage());
      if (text.contains("CANCELLED") || text.contains("closed") || text.contains("UNAVAILABLE")) {
        return true;
      }
    }
    return false;
  }

  private static void readStdout(Process process, CompletableFuture<String> ready) {
    try (BufferedReader out =
        new BufferedReader(
            new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
      String line;
      while ((line = out.readLine()) != null) {
        if (line.startsWith(READY_PREFIX)) {
          ready.complete(line.substring(READY_PREFIX.length()));
        } else if (line.startsWith(NOTICE_PREFIX)) {
          String notice = line.substring(NOTICE_PREFIX.length());
          LOG.warn("{}", notice);
          remember(notice);
        } else {
          LOG.debug("python: {}", line);
        }
      }
    } catch (IOException e) {
      ready.completeExceptionally(e);
    }
    ready.completeExceptionally(new IOException("the process closed its output"));
  }

  /**
   * The Python interpreter to use: the given one, else {@code $XINFER_PYTHON}, else {@code
   * .venv/bin/python} in the working directory (the project's root), else {@code python3}. Parent
   * directories are not searched: under a shared directory that would run another user's binary.
   */
  public static String resolvePython(@Nullable String configured) {
    if (configured != null && !configured.isEmpty()) {
      return configured;
    }
    String env = System.getenv("XINFER_PYTHON");
    if (env != null && !env.isEmpty()) {
      return env;
    }
    Path candidate = Paths.get("").toAbsolutePath().resolve(".venv/bin/python");
    return Files.isExecutable(candidate) ? candidate.toString() : "python3";
  }

  /**
   * Fails with a message naming the address and how to start a service there when nothing answers
   * at {@code hostPort}.
   */
  public static void checkReachable(String hostPort, Duration timeout) {
    checkReachable(hostPort, timeout, "expansion service", "xinfer-expansion-service");
  }

  private static void checkReachable(
      String hostPort, Duration timeout, String what, String command) {
    int colon = hostPort.lastIndexOf(':');
    if (colon <= 0 || colon == hostPort.length() - 1) {
      throw new IllegalArgumentException(
          "The " + what + " address '" + hostPort + "' is not HOST:PORT, e.g. 127.0.0.1:8097.");
    }
    String host = hostPort.substring(0, colon);
    int port;
    try {
      port = Integer.parseInt(hostPort.substring(colon + 1));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "The " + what + " address '" + hostPort + "' has no numeric port; use HOST:PORT.", e);
    }
    long deadline = System.nanoTime() + timeout.toNanos();
    IOException last;
    do {
      try (Socket socket = new Socket()) {
        socket.connect(new InetSocketAddress(host, port), 1000);
        return;
      } catch (IOException e) {
        last = e;
      }
      try {
        Thread.sleep(200);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
    } while (System.nanoTime() < deadline);
    throw new IllegalStateException(
        String.format(
            "No %s answers at %s (tried for %d s: %s). Start one with `.venv/bin/%s --port %d`%s.",
            what,
            hostPort,
            timeout.toSeconds(),
            last.getMessage(),
            command,
            port,
            what.equals("expansion service")
                ? ", or drop withExpansionService(...) to let xinfer start its own"
                : " beside the cluster's workers (./xinfer cluster up starts one)"));
  }

  public String expansionServiceAddress() {
    return expansionService;
  }

  /** The secret the expansion service checks on every call. */
  public String secret() {
    return secret;
  }

  public String workerPoolAddress() {
    return workerPool;
  }

  public Path logFile() {
    return logFile;
  }

  public boolean isAlive() {
    return process.isAlive();
  }

  /** The services process's pid (a new one after a restart). */
  public long pid() {
    return process.pid();
  }

  @Override
  public void close() {
    synchronized (this) {
      closed = true;
    }
    destroy(process);
    PrivateTempDirs.delete(logFile.getParent());
  }

  /** The modules named by {@code --xinferAllowedModules}, each a dotted Python module name. */
  static List<String> allowedModules(@Nullable String flag) {
    List<String> modules = new ArrayList<>();
    if (flag == null || flag.trim().isEmpty()) {
      return modules;
    }
    for (String name : flag.split(",")) {
      String module = name.trim();
      if (!MODULE_NAME.matcher(module).matches()) {
        throw new IllegalArgumentException(
            String.format(
                "--xinferAllowedModules=%s: '%s' is not a Python module name; list dotted module "
                    + "names separated by commas, e.g. --xinferAllowedModules=my_hooks,my_models.nets",
                flag, module));
      }
      modules.add(module);
    }
    return modules;
  }

  private static void destroy(Process process) {
    if (!process.isAlive()) {
      return;
    }
    process.destroy();
    try {
      if (!process.waitFor(10, TimeUnit.SECONDS)) {
        process.descendants().forEach(ProcessHandle::destroyForcibly);
        process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      process.destroyForcibly();
    }
  }

  static String tail(Path file) {
    try {
      List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
      return String.join(
          System.lineSeparator(),
          new ArrayList<>(lines.subList(Math.max(0, lines.size() - LOG_TAIL_LINES), lines.size())));
    } catch (IOException | UncheckedIOException e) {
      return "(log unreadable: " + e.getMessage() + ")";
    }
  }
}
