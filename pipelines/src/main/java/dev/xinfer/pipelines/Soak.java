package dev.xinfer.pipelines;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * {@code ./xinfer soak}: batch jobs one after another on the Flink session cluster of {@code
 * ./xinfer cluster up flink}, and every {@code EVERY} jobs a line of what a long-lived cluster
 * accumulates: per TaskManager its metaspace after a full GC, the job class loaders still loaded,
 * its threads and listening sockets; the SDK workers alive under the nodes' pools; the entries in
 * the temporary folder. Each job is the digits demo on the first {@code RECORDS} examples, checked
 * (every record predicted, none failed). The lines go to stdout and to a CSV.
 *
 * <pre>
 * Soak DATA_CSV MODEL PYTHON CLUSTERS_DIR CLASSES_DIR CSV JOBS EVERY RECORDS
 * </pre>
 */
public final class Soak {
  private final Path clusters;
  private final List<String> jobFlags;
  private final Path csv;
  private final int records;

  private Soak(Path clusters, List<String> jobFlags, Path csv, int records) {
    this.clusters = clusters;
    this.jobFlags = jobFlags;
    this.csv = csv;
    this.records = records;
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 9) {
      System.err.println(
          "usage: Soak DATA_CSV MODEL PYTHON CLUSTERS_DIR CLASSES_DIR CSV JOBS EVERY RECORDS");
      System.exit(2);
    }
    Path clusters = Path.of(args[3]);
    Path flink = clusters.resolve("flink");
    int jobs = Integer.parseInt(args[6]);
    int every = Integer.parseInt(args[7]);
    int records = Integer.parseInt(args[8]);
    Path input = Files.createTempFile("xinfer-soak-", ".csv");
    List<String> lines = Launcher.dataLines(Path.of(args[0]));
    Files.write(input, lines.subList(0, Math.min(records, lines.size())), StandardCharsets.UTF_8);
    Path output = Files.createTempDirectory("xinfer-soak-out-");
    List<String> flags =
        List.of(
            "--runner=FlinkRunner",
            "--flinkMaster=127.0.0.1:"
                + System.getenv().getOrDefault("XINFER_FLINK_REST_PORT", "8081"),
            "--flinkConfDir=" + flink.resolve("client-conf"),
            "--xinferWorkerPool=127.0.0.1:"
                + System.getenv().getOrDefault("XINFER_FLINK_POOL_PORT", "50000"),
            "--xinferWorkerPoolSecretFile=" + flink.resolve("pool.secret"),
            "--filesToStage=" + args[4],
            "--parallelism=2",
            "--input=" + input,
            "--modelUri=" + args[1],
            "--xinferPython=" + args[2],
            "--progressSeconds=60");
    Soak soak = new Soak(clusters, flags, Path.of(args[5]), Math.min(records, lines.size()));
    try {
      soak.run(jobs, every, output);
    } finally {
      Files.deleteIfExists(input);
      deleteTree(output);
    }
    System.exit(0);
  }

  private void run(int jobs, int every, Path output) throws Exception {
    Files.createDirectories(csv.getParent());
    List<String> header = new ArrayList<>(List.of("jobs", "seconds"));
    List<Long> taskManagers = pids("taskmanager*.pid");
    for (int node = 1; node <= taskManagers.size(); node++) {
      for (String column :
          List.of(
              "metaspace_mb",
              "metaspace_committed_mb",
              "job_classloaders",
              "threads",
              "listening")) {
        header.add("tm" + node + "_" + column);
      }
    }
    header.addAll(List.of("sdk_workers_alive", "tmp_entries"));
    Files.write(csv, List.of(String.join(",", header)), StandardCharsets.UTF_8);
    for (int node = 1; node <= taskManagers.size(); node++) {
      System.out.printf(
          Locale.ROOT,
          "xinfer soak: TaskManager %d's metaspace limit: %.0f MB (MaxMetaspaceSize)%n",
          node,
          metaspaceLimit(taskManagers.get(node - 1)));
    }
    long start = System.nanoTime();
    sample(0, start);
    for (int job = 1; job <= jobs; job++) {
      Path out = output.resolve("job-" + job);
      List<String> args = new ArrayList<>(jobFlags);
      args.add("--output=" + out.resolve("predictions"));
      args.add("--jobName=xinfer-soak-" + job);
      Launcher.Summary summary =
          Launcher.run(
              args.toArray(new String[0]), DigitsPipeline.Options.class, DigitsPipeline::build);
      if (summary.records != records || summary.failed() != 0) {
        throw new IllegalStateException(
            "soak job " + job + " predicted " + summary + ", not all " + records + " records");
      }
      deleteTree(out);
      if (job % every == 0 || job == jobs) {
        sample(job, start);
      }
    }
  }

  /** One line: the cluster's state after {@code jobs} jobs. */
  private void sample(int jobs, long start) throws Exception {
    List<String> row = new ArrayList<>();
    row.add(Integer.toString(jobs));
    row.add(String.format(Locale.ROOT, "%.0f", (System.nanoTime() - start) / 1e9));
    StringBuilder line =
        new StringBuilder(
            String.format(Locale.ROOT, "xinfer soak: after %d jobs (%s s):", jobs, row.get(1)));
    List<Long> taskManagers = pids("taskmanager*.pid");
    for (int node = 1; node <= taskManagers.size(); node++) {
      long pid = taskManagers.get(node - 1);
      jcmd(pid, "GC.run");
      double[] metaspace = metaspace(pid);
      long loaders = jobClassLoaders(pid);
      long threads = threads(pid);
      long listening = listening(pid).size();
      row.addAll(
          List.of(
              String.format(Locale.ROOT, "%.1f", metaspace[0]),
              String.format(Locale.ROOT, "%.1f", metaspace[1]),
              Long.toString(loaders),
              Long.toString(threads),
              Long.toString(listening)));
      line.append(
          String.format(
              Locale.ROOT,
              " TaskManager %d: metaspace %.1f MB used (%.1f committed), %d job class loader(s),"
                  + " %d threads, %d listening;",
              node,
              metaspace[0],
              metaspace[1],
              loaders,
              threads,
              listening));
    }
    long workers = 0;
    for (long pool : pids("worker-pool*.pid")) {
      workers += ProcessHandle.of(pool).map(p -> p.descendants().count()).orElse(0L);
    }
    long tmp;
    try (Stream<Path> entries = Files.list(Path.of(System.getProperty("java.io.tmpdir")))) {
      tmp = entries.count();
    }
    row.add(Long.toString(workers));
    row.add(Long.toString(tmp));
    line.append(
        String.format(
            Locale.ROOT,
            " SDK worker processes %d; %d entries in the temporary folder",
            workers,
            tmp));
    System.out.println(line);
    Files.write(
        csv,
        List.of(String.join(",", row)),
        StandardCharsets.UTF_8,
        java.nio.file.StandardOpenOption.APPEND);
  }

  /** The pids the Flink cluster's pid files matching {@code glob} name, by node. */
  private List<Long> pids(String glob) throws IOException {
    List<Path> files = new ArrayList<>();
    try (DirectoryStream<Path> found = Files.newDirectoryStream(clusters.resolve("flink"), glob)) {
      found.forEach(files::add);
    }
    // By node: NAME.pid is node 1's, NAME-K.pid node K's.
    files.sort(java.util.Comparator.comparingInt(Soak::node));
    List<Long> pids = new ArrayList<>();
    for (Path file : files) {
      pids.add(Long.parseLong(Files.readString(file, StandardCharsets.US_ASCII).trim()));
    }
    if (pids.isEmpty()) {
      throw new IllegalStateException(
          "no "
              + glob
              + " in "
              + clusters.resolve("flink")
              + ": start the cluster with ./xinfer cluster up flink");
    }
    return pids;
  }

  /** The node a pid file is of: 1 for NAME.pid, K for NAME-K.pid. */
  static int node(Path pidFile) {
    String name = pidFile.getFileName().toString().replaceFirst("\\.pid$", "");
    java.util.regex.Matcher m = java.util.regex.Pattern.compile("-(\\d+)$").matcher(name);
    return m.find() ? Integer.parseInt(m.group(1)) : 1;
  }

  /** The JVM's metaspace limit, MB ({@code -XX:MaxMetaspaceSize} in {@code jcmd VM.flags}). */
  static double metaspaceLimit(long pid) throws Exception {
    for (String line : jcmd(pid, "VM.flags")) {
      java.util.regex.Matcher m =
          java.util.regex.Pattern.compile("-XX:MaxMetaspaceSize=(\\d+)").matcher(line);
      if (m.find()) {
        return Long.parseLong(m.group(1)) / (1024.0 * 1024.0);
      }
    }
    throw new IllegalStateException("jcmd " + pid + " VM.flags names no MaxMetaspaceSize");
  }

  /** Metaspace used and committed, MB ({@code jcmd VM.metaspace}'s "Both" line). */
  static double[] metaspace(long pid) throws Exception {
    for (String line : jcmd(pid, "VM.metaspace")) {
      String trimmed = line.trim();
      if (trimmed.startsWith("Both:")) {
        return new double[] {megabytes(trimmed, "used"), megabytes(trimmed, "committed")};
      }
    }
    throw new IllegalStateException("jcmd " + pid + " VM.metaspace printed no 'Both:' line");
  }

  /**
   * The figure before {@code what} in a VM.metaspace line, such as "320.73 MB (>99%) used" or
   * "862.02 KB used".
   */
  static double megabytes(String line, String what) {
    java.util.regex.Matcher m =
        java.util.regex.Pattern.compile("([0-9.]+) ([KMG])B(?: \\([^)]*\\))? " + what)
            .matcher(line);
    if (!m.find()) {
      throw new IllegalStateException("no '" + what + "' figure in: " + line);
    }
    double value = Double.parseDouble(m.group(1));
    switch (m.group(2)) {
      case "K":
        return value / 1024;
      case "G":
        return value * 1024;
      default:
        return value;
    }
  }

  /** Class loaders of jobs (Flink's child-first user-code loaders) still loaded. */
  static long jobClassLoaders(long pid) throws Exception {
    return jcmd(pid, "VM.classloader_stats").stream()
        .filter(line -> line.contains("ChildFirstClassLoader"))
        .count();
  }

  private static long threads(long pid) throws IOException {
    for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
      if (line.startsWith("Threads:")) {
        return Long.parseLong(line.substring("Threads:".length()).trim());
      }
    }
    return -1;
  }

  /** The TCP sockets {@code pid} listens on (inodes of /proc/net/tcp{,6} in state LISTEN). */
  private static Set<String> listening(long pid) throws IOException {
    Set<String> inodes = new HashSet<>();
    try (DirectoryStream<Path> fds =
        Files.newDirectoryStream(Path.of("/proc", Long.toString(pid), "fd"))) {
      for (Path fd : fds) {
        try {
          String target = Files.readSymbolicLink(fd).toString();
          if (target.startsWith("socket:[")) {
            inodes.add(target.substring(8, target.length() - 1));
          }
        } catch (IOException e) {
          // closed meanwhile
        }
      }
    }
    Set<String> listening = new HashSet<>();
    for (String table : List.of("/proc/net/tcp", "/proc/net/tcp6")) {
      for (String line : Files.readAllLines(Path.of(table))) {
        String[] f = line.trim().split("\\s+");
        if (f.length > 9 && f[3].equals("0A") && inodes.contains(f[9])) {
          listening.add(f[1]);
        }
      }
    }
    return listening;
  }

  private static List<String> jcmd(long pid, String command) throws Exception {
    Process p =
        new ProcessBuilder(
                Path.of(System.getProperty("java.home"), "bin", "jcmd").toString(),
                Long.toString(pid),
                command)
            .redirectErrorStream(true)
            .start();
    List<String> out;
    try (java.io.BufferedReader r =
        new java.io.BufferedReader(
            new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
      out = r.lines().collect(java.util.stream.Collectors.toList());
    }
    if (!p.waitFor(120, TimeUnit.SECONDS) || p.exitValue() != 0) {
      p.destroyForcibly();
      throw new IllegalStateException("jcmd " + pid + " " + command + " failed: " + out);
    }
    return out;
  }

  private static void deleteTree(Path root) {
    if (!Files.exists(root)) {
      return;
    }
    try (Stream<Path> paths = Files.walk(root)) {
      paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
