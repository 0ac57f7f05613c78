package dev.xinfer.pipelines;

import dev.xinfer.runtime.flink.FlinkEngine;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * {@code ./xinfer chaos}: the demo's streaming pipeline on the embedded Flink under real faults,
 * one line per fault:
 *
 * <pre>
 * fault=sdk-worker-kill in=20000 unique_out=20000 duplicates=755 missing=0 dead_letters=0 restarts=1 gap_s=2.1 recover_s=2.1
 * </pre>
 *
 * <p>{@code gap_s}: the longest time without output from the fault's start on; {@code recover_s}:
 * that less the fault's own duration (the broker's 30 s down), the time the job took to recover;
 * {@code -} without a fault or output after it. Every fault targets only this machine's processes
 * that the run started (the SDK worker and services are this JVM's descendants; the broker is the
 * one {@code ./xinfer cluster up kafka} started, by its pid file), and each case is bounded in
 * time. Arguments: the demo's data file, the model, the Python, the project's root.
 */
public final class Chaos {
  private final Path input;
  private final Path model;
  private final String python;
  private final Path root;
  private final Path out;
  private final String servers;

  private Chaos(Path input, Path model, String python, Path root) throws IOException {
    this.input = input;
    this.model = model;
    this.python = python;
    this.root = root;
    this.out = Files.createTempDirectory("xinfer-chaos-");
    this.servers = System.getProperty("xinfer.kafka", "127.0.0.1:9092");
  }

  /** One fault case: runs it and returns its line. */
  private interface Case {
    String run() throws Exception;
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 4 && args.length != 5) {
      System.err.println("usage: Chaos DATA_CSV MODEL PYTHON PROJECT_ROOT [CASE,...]");
      System.exit(2);
    }
    Chaos chaos = new Chaos(Path.of(args[0]), Path.of(args[1]), args[2], Path.of(args[3]));
    java.util.Map<String, Case> cases = new java.util.LinkedHashMap<>();
    cases.put("sdk-worker-kill", () -> chaos.sdkWorkerKill(true));
    cases.put("sdk-worker-kill-at-least-once", () -> chaos.sdkWorkerKill(false));
    cases.put("spark-sdk-worker-kill", chaos::sparkSdkWorkerKill);
    cases.put("refresh-then-worker-kill", chaos::refreshThenWorkerKill);
    cases.put("services-kill", chaos::servicesKill);
    cases.put("services-then-worker-kill", chaos::servicesThenWorkerKill);
    cases.put("poison-records", chaos::poisonRecords);
    cases.put("broker-down-30s", () -> chaos.brokerDown(30));
    // Longer than the producers' 120 s delivery timeout.
    cases.put("broker-down-150s", () -> chaos.brokerDown(150));
    cases.put("hanging-hook", chaos::hangingHook);
    cases.put("launcher-kill", chaos::launcherKill);
    cases.put("launcher-kill-resume", chaos::launcherKillResume);
    cases.put("spark-driver-kill-resume", chaos::sparkDriverKillResume);
    cases.put("taskmanager-kill", () -> chaos.taskManagerKill(1));
    cases.put("taskmanager-kill-standby", () -> chaos.taskManagerKill(2));
    List<String> chosen =
        args.length == 5 ? List.of(args[4].split(",")) : new ArrayList<>(cases.keySet());
    for (String name : chosen) {
      if (!cases.containsKey(name)) {
        System.err.println("xinfer chaos: no case " + name + "; the cases: " + cases.keySet());
        System.exit(2);
      }
    }
    List<String> lines = new ArrayList<>();
    for (String name : chosen) {
      lines.add(cases.get(name).run());
    }
    System.out.println();
    System.out.println(
        "xinfer chaos: embedded Flink (two cases on the Flink cluster, two on the embedded Spark), "
            + java.time.LocalDate.now());
    lines.forEach(System.out::println);
    System.exit(0);
  }

  /** The fault, run on its own thread while the job streams; returns when the fault is over. */
  private interface Fault {
    void inject() throws Exception;
  }

  /**
   * The demo's streaming job on the embedded Flink for case {@code name}, on topics named after
   * {@code topic}; a case's own flag replaces the default of the same name (e.g. --flinkMaster).
   */
  private List<String> jobFlags(String name, String topic, Path data, String... flags) {
    List<String> args =
        new ArrayList<>(
            List.of(
                "--runner=FlinkRunner",
                "--flinkMaster=[local]",
                "--parallelism=2",
                "--checkpointingInterval=1000",
                "--streaming",
                "--input=" + data,
                "--output=" + out.resolve(name).resolve("predictions"),
                "--modelUri=" + model,
                "--xinferPython=" + python,
                "--bootstrapServers=" + servers,
                "--inputTopic=" + topic + "-in",
                "--outputTopic=" + topic + "-out",
                "--deadLetterTopic=" + topic + "-dead",
                "--resultTimeoutSeconds=240"));
    for (String flag : flags) {
      if (flag.startsWith("--") && flag.contains("=")) {
        String option = flag.substring(0, flag.indexOf('=') + 1);
        args.removeIf(a -> a.startsWith(option));
      }
    }
    args.addAll(List.of(flags));
    return args;
  }

  /** One case; {@code fault} null: none injected (the records or flags are the fault). */
  private String run(
      String name, Path data, @Nullable Fault fault, long faultAfterMillis, String... flags)
      throws Exception {
    return run(name, data, false, faultAfterMillis, fault, flags);
  }

  /**
   * One case, the fault {@code faultAfterMillis} after the job's start, or, {@code
   * afterFirstOutput}, after its first prediction was read back (a cluster job takes long to
   * deploy: a fault before it runs tests the deployment, not the recovery).
   */
  private String run(
      String name,
      Path data,
      boolean afterFirstOutput,
      long faultAfterMillis,
      @Nullable Fault fault,
      String... flags)
      throws Exception {
    String topic = "xinfer-chaos-" + name + "-" + System.nanoTime();
    List<String> args = jobFlags(name, topic, data, flags);
    ConcurrentLinkedQueue<Long> arrivals = new ConcurrentLinkedQueue<>();
    Thread watcher = watchArrivals(topic + "-out", arrivals);
    long[] faultStart = {0};
    long[] faultEnd = {0};
    Thread injector =
        new Thread(
            () -> {
              try {
                while (afterFirstOutput && arrivals.isEmpty()) {
                  Thread.sleep(100);
                }
                Thread.sleep(faultAfterMillis);
                faultStart[0] = System.nanoTime();
                fault.inject();
              } catch (Exception e) {
                System.err.println("xinfer chaos: the fault " + name + " failed: " + e);
              } finally {
                faultEnd[0] = System.nanoTime();
              }
            },
            "xinfer-chaos-fault");
    injector.setDaemon(true);
    int restartsBefore = FlinkEngine.restartsSoFar(); // Flink's job restarts; Spark's not counted
    boolean onFlink = args.contains("--runner=FlinkRunner");
    String result;
    try {
      if (fault != null) {
        injector.start();
      }
      Launcher.Summary s =
          Launcher.run(
              args.toArray(new String[0]), DigitsPipeline.Options.class, DigitsPipeline::build);
      if (fault != null) {
        injector.join(TimeUnit.MINUTES.toMillis(2));
      }
      result =
          String.format(
              Locale.ROOT,
              "in=%d unique_out=%d duplicates=%d missing=%d dead_letters=%d restarts=%s gap_s=%s"
                  + " recover_s=%s",
              s.records,
              s.predictions,
              s.duplicates,
              s.missing(),
              s.deadLetters,
              onFlink ? String.valueOf(FlinkEngine.restartsSoFar() - restartsBefore) : "-",
              format(gap(arrivals, faultStart[0])),
              format(gap(arrivals, faultStart[0]) - seconds(faultEnd[0] - faultStart[0])));
    } catch (RuntimeException e) {
      if (fault != null) {
        injector.join(TimeUnit.MINUTES.toMillis(2));
      }
      String[] lines = String.valueOf(e.getCause() == null ? e : e.getCause()).split("\n");
      String message = lines[0];
      for (String line : lines) {
        if (line.contains("worker pool reported:")) {
          message = line.trim(); // what the pool said killed the worker says most
        }
      }
      result =
          String.format(
              Locale.ROOT,
              "job_failed restarts=%d reason=%s",
              FlinkEngine.restartsSoFar() - restartsBefore,
              message.length() > 200 ? message.substring(0, 200) + "..." : message);
    } finally {
      watcher.interrupt();
    }
    String line = "fault=" + name + " " + result;
    System.err.println("xinfer chaos: " + line);
    return line;
  }

  /**
   * The longest time without output from {@code faultStartNanos} on (until the last output): the
   * outage the fault caused, its own duration included. NaN when there was no fault or no output.
   */
  private static double gap(ConcurrentLinkedQueue<Long> arrivals, long faultStartNanos) {
    if (faultStartNanos == 0) {
      return Double.NaN;
    }
    List<Long> after =
        arrivals.stream().filter(t -> t >= faultStartNanos).sorted().collect(Collectors.toList());
    if (after.isEmpty()) {
      return Double.NaN;
    }
    long longest = after.get(0) - faultStartNanos;
    for (int i = 1; i < after.size(); i++) {
      longest = Math.max(longest, after.get(i) - after.get(i - 1));
    }
    return seconds(longest);
  }

  private static double seconds(long nanos) {
    return nanos / 1e9;
  }

  private static String format(double seconds) {
    return Double.isNaN(seconds) ? "-" : String.format(Locale.ROOT, "%.1f", Math.max(0, seconds));
  }

  /** Records when each committed output arrives, on a consumer of its own. */
  /** Predictions read back per model id (the 4th field of a prediction), of the current case. */
  private final java.util.concurrent.ConcurrentHashMap<String, Long> modelIds =
      new java.util.concurrent.ConcurrentHashMap<>();

  /** Outputs read back per record id, of the current case. */
  private final java.util.concurrent.ConcurrentHashMap<Long, Integer> outputsById =
      new java.util.concurrent.ConcurrentHashMap<>();

  private Thread watchArrivals(String topic, ConcurrentLinkedQueue<Long> arrivals) {
    modelIds.clear();
    outputsById.clear();
    Thread thread =
        new Thread(
            () -> {
              Properties props = new Properties();
              props.put("bootstrap.servers", servers);
              props.put("group.id", "xinfer-chaos-" + System.nanoTime());
              props.put("auto.offset.reset", "earliest");
              props.put("isolation.level", "read_committed");
              try (KafkaConsumer<Long, String> consumer =
                  new KafkaConsumer<>(props, new LongDeserializer(), new StringDeserializer())) {
                consumer.subscribe(List.of(topic));
                while (!Thread.currentThread().isInterrupted()) {
                  var records = consumer.poll(Duration.ofMillis(100));
                  long now = System.nanoTime();
                  for (var record : records) {
                    arrivals.add(now);
                    outputsById.merge(record.key(), 1, Integer::sum);
                    String[] fields = String.valueOf(record.value()).split(",", 5);
                    if (fields.length > 3) {
                      modelIds.merge(fields[3], 1L, Long::sum);
                    }
                  }
                }
              } catch (org.apache.kafka.common.errors.InterruptException e) {
                // done
              } catch (RuntimeException e) {
                System.err.println("xinfer chaos: output watcher: " + e);
              }
            },
            "xinfer-chaos-arrivals");
    thread.setDaemon(true);
    thread.start();
    return thread;
  }

  private static java.util.Optional<ProcessHandle> descendant(String commandLinePart) {
    return ProcessHandle.current()
        .descendants()
        .filter(
            p ->
                p.info()
                    .arguments()
                    .map(a -> String.join(" ", a).contains(commandLinePart))
                    .orElse(false))
        .findFirst();
  }

  private static void killDescendants(String commandLinePart) {
    descendant(commandLinePart)
        .ifPresentOrElse(
            p -> {
              System.err.println("xinfer chaos: kill -9 " + p.pid() + " (" + commandLinePart + ")");
              p.destroyForcibly();
            },
            () -> System.err.println("xinfer chaos: no process " + commandLinePart + " to kill"));
  }

  private String sdkWorkerKill(boolean exactlyOnce) throws Exception {
    return run(
        exactlyOnce ? "sdk-worker-kill" : "sdk-worker-kill-at-least-once",
        input,
        () -> killDescendants("SdkHarness("),
        20_000,
        "--exactlyOnce=" + exactlyOnce,
        "--records=20000",
        "--rate=1000");
  }

  /**
   * kill -9 of the SDK worker of a streaming job on the embedded Spark, which retries a failed task
   * up to 4 times ({@code local[2,4]}, as {@code spark.task.maxFailures} does on a cluster): the
   * retried micro-batch is read again from the same Kafka offsets, so what the failed attempt had
   * written is written again (Spark promises at least once here).
   */
  private String sparkSdkWorkerKill() throws Exception {
    return run(
        "spark-sdk-worker-kill",
        input,
        () -> killDescendants("SdkHarness("),
        30_000,
        "--runner=SparkRunner",
        "--sparkMaster=local[2,4]",
        // Spark streaming runs ~50 records/s here (a new SDK worker per micro-batch, see README).
        "--records=3000",
        "--rate=100");
  }

  /**
   * Model refresh, then a restore, at parallelism 2: the job serves {@code v1} of a glob of
   * versions; 5 s after its first output, {@code v2} is renamed into place (each worker looks every
   * 3 s); 10 s later the SDK worker is killed and the job restores from its last checkpoint. The
   * line adds the predictions read back per model id: the replayed records are scored by the
   * version the new worker loads (the newest), as README says.
   */
  private String refreshThenWorkerKill() throws Exception {
    Path versions = out.resolve("refresh-versions");
    copyTree(model, versions.resolve("v1"));
    String line =
        run(
            "refresh-then-worker-kill",
            input,
            true,
            5_000,
            () -> {
              Path hidden = versions.resolve(".v2");
              copyTree(model.resolveSibling(model.getFileName() + "-v2"), hidden);
              Files.move(hidden, versions.resolve("v2"));
              System.err.println("xinfer chaos: model v2 in place");
              Thread.sleep(10_000);
              killDescendants("SdkHarness(");
            },
            "--modelUri=" + versions.resolve("v*"),
            "--modelRefreshSeconds=3",
            "--records=20000",
            "--rate=1000");
    return line + " predictions_by_model=" + new java.util.TreeMap<>(modelIds);
  }

  private static void copyTree(Path from, Path to) throws IOException {
    try (var paths = Files.walk(from)) {
      for (Path p : (Iterable<Path>) paths::iterator) {
        Path target = to.resolve(from.relativize(p).toString());
        if (Files.isDirectory(p)) {
          Files.createDirectories(target);
        } else {
          Files.copy(p, target, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
      }
    }
  }

  private String servicesKill() throws Exception {
    return run(
        "services-kill",
        input,
        () -> killDescendants("xinfer.services"),
        20_000,
        "--records=20000",
        "--rate=1000");
  }

  /**
   * The services killed, then (10 s later) the SDK worker: the restarted job needs a worker from a
   * pool, which is there only because the services were started again on the same port.
   */
  private String servicesThenWorkerKill() throws Exception {
    return run(
        "services-then-worker-kill",
        input,
        () -> {
          // Found first: once its pool is gone the worker is no longer this JVM's descendant.
          java.util.Optional<ProcessHandle> worker = descendant("SdkHarness(");
          killDescendants("xinfer.services");
          Thread.sleep(10_000);
          worker.ifPresentOrElse(
              p -> {
                System.err.println("xinfer chaos: kill -9 " + p.pid() + " (the SDK worker)");
                p.destroyForcibly();
              },
              () -> System.err.println("xinfer chaos: no SDK worker to kill"));
        },
        15_000,
        "--records=30000",
        "--rate=1000");
  }

  private String poisonRecords() throws Exception {
    List<String> lines =
        Files.readAllLines(input, StandardCharsets.UTF_8).stream()
            .filter(l -> !l.startsWith("id,"))
            .limit(1000)
            .collect(Collectors.toList());
    lines.add(100, "not a record");
    lines.add(200, "900001,3,1.0,x,2.0");
    lines.add(300, "900002,3,1.0,2.0");
    lines.add(400, "900003,3," + "1.0,".repeat(20_000) + "1.0"); // 20,001 values
    Path poisoned = out.resolve("poisoned.csv");
    Files.write(poisoned, lines, StandardCharsets.UTF_8);
    return run("poison-records", poisoned, null, 0, "--rate=500");
  }

  /**
   * kill -9 of the TaskManager that runs a streaming job on the Flink cluster of {@code ./xinfer
   * cluster up flink --taskmanagers N} (each TaskManager with its own Python worker pool; the one
   * whose pool started the job's SDK worker is killed); 5 s later {@code ./xinfer cluster up flink}
   * replaces the lost node, as an operator or a supervisor would. With one TaskManager the job
   * restarts from its last checkpoint on the new one; with two, at once on the other, which has the
   * slots (a standby). The cluster is started in that shape for the case (one up in another shape
   * is stopped first) and left as it was found.
   */
  private String taskManagerKill(int taskManagers) throws Exception {
    Path dir = root.resolve(".xinfer/clusters/flink");
    boolean wasUp = alive(dir.resolve("jobmanager.pid"));
    String shape =
        Files.exists(dir.resolve("nodes")) ? Files.readString(dir.resolve("nodes")).trim() : "1 2";
    boolean reshape = wasUp && !shape.startsWith(taskManagers + " ");
    if (reshape) {
      cluster("down", "flink");
    }
    cluster("up", "flink", "--taskmanagers", String.valueOf(taskManagers));
    try {
      return taskManagerKill(dir, taskManagers);
    } finally {
      if (!wasUp || reshape) { // leave it as it was found
        cluster("down", "flink");
      }
      if (reshape) {
        String[] nodesAndSlots = shape.split(" ");
        cluster("up", "flink", "--taskmanagers", nodesAndSlots[0], "--slots", nodesAndSlots[1]);
      }
    }
  }

  private String taskManagerKill(Path dir, int taskManagers) throws Exception {
    List<String> nodes = new ArrayList<>();
    for (int k = 1; k <= taskManagers; k++) {
      nodes.add(k == 1 ? "" : "-" + k); // the files of node k: taskmanager-k.pid, worker-pool-k.log
    }
    java.util.Map<String, Long> workersBefore = new java.util.HashMap<>();
    for (String node : nodes) {
      workersBefore.put(node, sdkWorkersStarted(dir.resolve("worker-pool" + node + ".log")));
    }
    return run(
        taskManagers == 1 ? "taskmanager-kill" : "taskmanager-kill-standby",
        input,
        true,
        10_000,
        () -> {
          String node = null;
          for (String candidate : nodes) {
            if (sdkWorkersStarted(dir.resolve("worker-pool" + candidate + ".log"))
                > workersBefore.get(candidate)) {
              node = candidate;
              break;
            }
          }
          if (node == null) {
            throw new IllegalStateException("no TaskManager's pool started the job's SDK worker");
          }
          long pid =
              Long.parseLong(Files.readString(dir.resolve("taskmanager" + node + ".pid")).trim());
          ProcessHandle tm =
              ProcessHandle.of(pid)
                  .orElseThrow(() -> new IllegalStateException("no TaskManager " + pid));
          System.err.println(
              "xinfer chaos: kill -9 of the TaskManager that runs the job (pid "
                  + pid
                  + ", node "
                  + (node.isEmpty() ? "1" : node.substring(1))
                  + " of "
                  + taskManagers
                  + ")");
          tm.destroyForcibly();
          tm.onExit().get(30, TimeUnit.SECONDS);
          Thread.sleep(5_000);
          clusterUp("flink");
        },
        "--flinkMaster=127.0.0.1:8081",
        "--flinkConfDir=" + dir.resolve("client-conf"),
        Launcher.filesToStageFlag(),
        "--xinferWorkerPool=127.0.0.1:50000",
        "--xinferWorkerPoolSecretFile=" + dir.resolve("pool.secret"),
        "--records=40000",
        "--rate=1000");
  }

  /** How many SDK workers a worker pool's log says it started. */
  private static long sdkWorkersStarted(Path poolLog) throws IOException {
    if (!Files.exists(poolLog)) {
      return 0;
    }
    try (java.util.stream.Stream<String> lines = Files.lines(poolLog)) {
      return lines.filter(l -> l.contains("Starting SDK worker")).count();
    }
  }

  private static boolean alive(Path pidFile) {
    try {
      return ProcessHandle.of(Long.parseLong(Files.readString(pidFile).trim()))
          .map(ProcessHandle::isAlive)
          .orElse(false);
    } catch (IOException | NumberFormatException e) {
      return false;
    }
  }

  private void clusterUp(String name) throws Exception {
    cluster("up", name);
  }

  private void cluster(String action, String name, String... flags) throws Exception {
    List<String> command =
        new ArrayList<>(List.of(root.resolve("xinfer").toString(), "cluster", action, name));
    command.addAll(List.of(flags));
    Process up = new ProcessBuilder(command).inheritIO().start();
    if (!up.waitFor(5, TimeUnit.MINUTES) || up.exitValue() != 0) {
      up.destroyForcibly();
      throw new IllegalStateException("./xinfer cluster " + action + " " + name + " failed");
    }
  }

  /**
   * kill -9 of the launcher JVM (a separate one, running the demo's streaming job) after 20 s: the
   * Python processes it started (the services, the SDK worker) must all be gone within 30 s.
   */
  private String launcherKill() throws Exception {
    String topic = "xinfer-chaos-launcher-kill-" + System.nanoTime();
    List<String> command =
        launcherCommand(jobFlags("launcher-kill", topic, input, "--records=40000", "--rate=1000"));
    Process launcher =
        new ProcessBuilder(command)
            .redirectErrorStream(true)
            .redirectOutput(out.resolve("launcher-kill.log").toFile())
            .start();
    String line;
    try {
      Thread.sleep(20_000);
      List<ProcessHandle> started =
          launcher.descendants().filter(ProcessHandle::isAlive).collect(Collectors.toList());
      System.err.println(
          "xinfer chaos: kill -9 of the launcher JVM "
              + launcher.pid()
              + " ("
              + started.size()
              + " processes below it)");
      long killed = System.nanoTime();
      launcher.destroyForcibly();
      launcher.waitFor(30, TimeUnit.SECONDS);
      long left = started.size();
      while (left > 0 && System.nanoTime() - killed < TimeUnit.SECONDS.toNanos(30)) {
        Thread.sleep(100);
        left = started.stream().filter(ProcessHandle::isAlive).count();
      }
      line =
          String.format(
              Locale.ROOT,
              "fault=launcher-kill processes_below=%d left_after=%d gone_s=%s",
              started.size(),
              left,
              left == 0 ? format(seconds(System.nanoTime() - killed)) : "-");
      // A test run must not leave anything behind even if the check failed.
      started.forEach(ProcessHandle::destroyForcibly);
    } finally {
      launcher.destroyForcibly();
    }
    System.err.println("xinfer chaos: " + line);
    return line;
  }

  /**
   * kill -9 of a launcher JVM (its own process, the demo's streaming job, exactly once) once 5,000
   * predictions are back; then the same job is run again in this JVM with {@code
   * --savepointPath=<the killed job's checkpoint folder>}, which restores its newest complete
   * checkpoint (Kafka offsets, the sink's numbering), and runs until every record that reached the
   * input topic has its prediction. The output topic is read with read_committed from the start.
   */
  private String launcherKillResume() throws Exception {
    return killAndRunAgain(
        "launcher-kill-resume",
        5_000,
        log -> List.of("--savepointPath=" + checkpointFolder(log)),
        "--records=20000",
        "--rate=1000");
  }

  /**
   * The driver of an embedded Spark streaming job killed ({@code kill -9} of its launcher JVM at
   * 1,500 predictions), then the same job run again with the same {@code --checkpointDir}: it goes
   * on from the Kafka positions and micro-batches of its last checkpoint (at least once); the line
   * shows the duplicates and missing records that leaves.
   */
  private String sparkDriverKillResume() throws Exception {
    // This chaos run's own folder: both runs use it, the second restores from it.
    Path checkpoints = out.resolve("spark-driver-kill-resume").resolve("checkpoints");
    return killAndRunAgain(
        "spark-driver-kill-resume",
        1_500,
        log -> List.of(),
        "--runner=SparkRunner",
        "--sparkMaster=local[2,4]",
        "--checkpointDir=" + checkpoints,
        "--records=6000",
        "--rate=300");
  }

  /** What a run that is run again after its launcher's kill adds to the job's flags. */
  private interface AgainFlags {
    List<String> from(Path firstRunLog) throws IOException;
  }

  /**
   * Runs the job in a launcher JVM of its own, kills it ({@code kill -9}) once {@code killAt}
   * predictions are out, then runs the job again in this JVM with {@code again}'s flags added, and
   * reports what the two runs wrote together.
   */
  private String killAndRunAgain(String name, int killAt, AgainFlags again, String... caseFlags)
      throws Exception {
    String topic = "xinfer-chaos-" + name + "-" + System.nanoTime();
    List<String> flags = jobFlags(name, topic, input, caseFlags);
    List<String> command = launcherCommand(flags);
    Path log = out.resolve(name + ".log");
    ConcurrentLinkedQueue<Long> arrivals = new ConcurrentLinkedQueue<>();
    Thread watcher = watchArrivals(topic + "-out", arrivals);
    Process launcher =
        new ProcessBuilder(command)
            .directory(root.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .start();
    try {
      long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(3);
      while (outputsById.size() < killAt && launcher.isAlive() && System.nanoTime() < deadline) {
        Thread.sleep(100);
      }
      if (!launcher.isAlive() || outputsById.size() < killAt) {
        return "fault="
            + name
            + " job_failed reason=the first run did not get to "
            + killAt
            + " predictions"
            + " (see "
            + log
            + ")";
      }
      List<ProcessHandle> below =
          launcher.descendants().filter(ProcessHandle::isAlive).collect(Collectors.toList());
      System.err.println(
          "xinfer chaos: kill -9 of the launcher JVM "
              + launcher.pid()
              + " at "
              + outputsById.size()
              + " predictions");
      launcher.destroyForcibly();
      launcher.waitFor(30, TimeUnit.SECONDS);
      long killed = System.nanoTime();
      while (below.stream().anyMatch(ProcessHandle::isAlive)
          && System.nanoTime() - killed < TimeUnit.SECONDS.toNanos(30)) {
        Thread.sleep(100);
      }
      below.forEach(ProcessHandle::destroyForcibly);
      List<String> added = again.from(log);
      java.util.Set<Long> in = idsIn(topic + "-in");
      int before = outputsById.size();
      System.err.println(
          "xinfer chaos: "
              + in.size()
              + " records reached the input topic, "
              + before
              + " predictions were written; running the job again with "
              + added);
      List<String> resume = new ArrayList<>(flags);
      resume.addAll(added);
      DigitsPipeline.Options options =
          org.apache.beam.sdk.options.PipelineOptionsFactory.fromArgs(resume.toArray(new String[0]))
              .withValidation()
              .as(DigitsPipeline.Options.class);
      int restartsBefore = FlinkEngine.restartsSoFar();
      long resumed = System.nanoTime();
      org.apache.beam.sdk.PipelineResult result =
          DigitsPipeline.build(org.apache.beam.sdk.Pipeline.create(options), options).run();
      try {
        long end = System.nanoTime() + TimeUnit.MINUTES.toNanos(4);
        while (!outputsById.keySet().containsAll(in) && System.nanoTime() < end) {
          Thread.sleep(200);
        }
        Thread.sleep(5_000); // a late duplicate would show here
      } finally {
        try {
          result.cancel();
        } catch (java.io.IOException | RuntimeException e) {
          System.err.println("xinfer chaos: cancelling the resumed job: " + e);
        }
      }
      long missing = in.stream().filter(id -> !outputsById.containsKey(id)).count();
      long duplicates = outputsById.values().stream().mapToLong(n -> n - 1).sum();
      long firstAfter = arrivals.stream().filter(t -> t >= resumed).min(Long::compare).orElse(0L);
      return String.format(
          Locale.ROOT,
          "fault=%s in=%d out_before_kill=%d unique_out=%d duplicates=%d missing=%d"
              + " restarts=%s first_output_after_resume_s=%s",
          name,
          in.size(),
          before,
          outputsById.size(),
          duplicates,
          missing,
          flags.contains("--runner=SparkRunner")
              ? "-"
              : String.valueOf(FlinkEngine.restartsSoFar() - restartsBefore),
          firstAfter == 0 ? "-" : format(seconds(firstAfter - resumed)));
    } finally {
      launcher.destroyForcibly();
      watcher.interrupt();
      watcher.join(10_000);
    }
  }

  /** A launcher JVM of its own (this JVM's java, flags and class path) running the demo's job. */
  private static List<String> launcherCommand(List<String> jobFlags) {
    List<String> command = new ArrayList<>();
    command.add(ProcessHandle.current().info().command().orElse("java"));
    command.addAll(java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments());
    command.addAll(
        List.of("-cp", System.getProperty("java.class.path"), DigitsPipeline.class.getName()));
    command.addAll(jobFlags);
    return command;
  }

  /** The killed job's checkpoint folder, from its log ("... checkpoints to DIR; ..."). */
  private static String checkpointFolder(Path log) throws IOException {
    java.util.regex.Matcher m =
        java.util.regex.Pattern.compile("checkpoints to (\\S+);")
            .matcher(Files.readString(log, StandardCharsets.UTF_8));
    if (!m.find()) {
      throw new IllegalStateException("the launcher's log " + log + " names no checkpoint folder");
    }
    return m.group(1);
  }

  /** The ids of the records in {@code topic}, read from the start until 3 s pass with none. */
  private java.util.Set<Long> idsIn(String topic) {
    Properties props = new Properties();
    props.put("bootstrap.servers", servers);
    props.put("group.id", "xinfer-chaos-in-" + System.nanoTime());
    props.put("auto.offset.reset", "earliest");
    java.util.Set<Long> ids = new java.util.HashSet<>();
    try (KafkaConsumer<Long, String> consumer =
        new KafkaConsumer<>(props, new LongDeserializer(), new StringDeserializer())) {
      consumer.subscribe(List.of(topic));
      long idleSince = System.nanoTime();
      while (System.nanoTime() - idleSince < TimeUnit.SECONDS.toNanos(3)) {
        var records = consumer.poll(Duration.ofMillis(200));
        if (!records.isEmpty()) {
          idleSince = System.nanoTime();
        }
        records.forEach(r -> ids.add(r.key()));
      }
    }
    return ids;
  }

  private String brokerDown(int seconds) throws Exception {
    Path pidFile = root.resolve(".xinfer/clusters/kafka/kafka.pid");
    Consumer<String> step = m -> System.err.println("xinfer chaos: " + m);
    return run(
        "broker-down-" + seconds + "s",
        input,
        () -> {
          long pid = Long.parseLong(Files.readString(pidFile).trim());
          ProcessHandle broker =
              ProcessHandle.of(pid)
                  .orElseThrow(() -> new IllegalStateException("no broker " + pid));
          step.accept("stopping the Kafka broker (pid " + pid + ") for " + seconds + " s");
          broker.destroy();
          broker.onExit().get(60, TimeUnit.SECONDS);
          Thread.sleep(TimeUnit.SECONDS.toMillis(seconds));
          step.accept("starting the Kafka broker again");
          Process up =
              new ProcessBuilder(root.resolve("xinfer").toString(), "cluster", "up", "kafka")
                  .inheritIO()
                  .start();
          if (!up.waitFor(120, TimeUnit.SECONDS) || up.exitValue() != 0) {
            throw new IllegalStateException("./xinfer cluster up kafka did not start the broker");
          }
        },
        20_000,
        "--records=40000",
        "--rate=1000");
  }

  private String hangingHook() throws Exception {
    // Not the demo's model call but a hook that never returns: the job restarts within its bound
    // and then fails, naming the flag.
    return run(
        "hanging-hook",
        input,
        null,
        0,
        "--records=200",
        "--rate=100",
        "--xinferBundleTimeout=5",
        "--preprocess=xinfer.examples.hooks:stall");
  }
}
