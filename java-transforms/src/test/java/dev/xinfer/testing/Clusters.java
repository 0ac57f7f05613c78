package dev.xinfer.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** The clusters {@code ./xinfer cluster up} started: their folder, pools' secrets and processes. */
public final class Clusters {
  private Clusters() {}

  /** {@code .xinfer/clusters/NAME} (the build passes -Dxinfer.clusters). */
  public static Path dir(String name) {
    return Paths.get(System.getProperty("xinfer.clusters", ".xinfer/clusters")).resolve(name);
  }

  /** The secret file of the cluster's Python worker pool. */
  public static String poolSecret(String name) {
    return dir(name).resolve("pool.secret").toString();
  }

  /** The pids the cluster's pid files name (JVMs and the worker pool). */
  public static List<Long> pids(String name) {
    List<Long> pids = new ArrayList<>();
    try (DirectoryStream<Path> files = Files.newDirectoryStream(dir(name), "*.pid")) {
      for (Path file : files) {
        pids.add(Long.parseLong(Files.readString(file, StandardCharsets.US_ASCII).trim()));
      }
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read the pid files of the " + name + " cluster", e);
    }
    if (pids.isEmpty()) {
      throw new IllegalStateException("no pid files in " + dir(name) + ": is the cluster up?");
    }
    return pids;
  }

  /** The cluster's nodes (TaskManagers, Spark workers), as {@code ./xinfer cluster up} wrote. */
  public static int nodes(String name) {
    Path nodes = dir(name).resolve("nodes");
    try {
      return Files.exists(nodes)
          ? Integer.parseInt(
              Files.readString(nodes, StandardCharsets.US_ASCII).trim().split(" ")[0])
          : 1;
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read " + nodes, e);
    }
  }

  /**
   * Fails, saying how to get the right cluster, unless the cluster has {@code nodes} nodes ({@code
   * ./xinfer test} starts Flink with 2 TaskManagers and Spark with 2 workers).
   */
  public static void requireNodes(String name, int nodes) {
    if (nodes(name) != nodes) {
      throw new AssertionError(
          "the "
              + name
              + " cluster has "
              + nodes(name)
              + " node(s), not the "
              + nodes
              + " ./xinfer test starts it with: ./xinfer cluster down "
              + name
              + ", then run the tests again");
    }
  }

  /**
   * How many SDK workers node {@code node} (1, 2...) of the cluster's Python worker pools has
   * started so far, from its log.
   */
  public static long sdkWorkersStarted(String name, int node) {
    Path log = dir(name).resolve(node == 1 ? "worker-pool.log" : "worker-pool-" + node + ".log");
    try (java.util.stream.Stream<String> lines = Files.lines(log, StandardCharsets.UTF_8)) {
      return lines.filter(line -> line.contains(" INFO Starting SDK worker ")).count();
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read node " + node + "'s worker pool log " + log, e);
    }
  }

  /** The addresses seen in {@code after} and not in {@code before}, over all processes. */
  public static Set<String> opened(Map<Long, Set<String>> before, Map<Long, Set<String>> after) {
    Set<String> opened = new HashSet<>();
    after.values().forEach(opened::addAll);
    before.values().forEach(opened::removeAll);
    return opened;
  }
}
