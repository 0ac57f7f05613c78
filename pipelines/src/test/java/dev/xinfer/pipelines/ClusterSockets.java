package dev.xinfer.pipelines;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Clusters;
import dev.xinfer.testing.ListeningSockets;
import dev.xinfer.testing.SocketWatch;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A socket check of a cluster from {@code ./xinfer cluster up}: while a job runs, every process of
 * the cluster (its JVMs, the Java harnesses and executors they start, the worker pool and its SDK
 * workers) and of this JVM listens on loopback only, and the job's own servers (the Fn API servers
 * of its Python stages, which Beam opens in the TaskManager or executor) were seen.
 */
final class ClusterSockets {
  private ClusterSockets() {}

  static void check(String cluster, SocketWatch.Job job) throws Exception {
    List<Long> pids = Clusters.pids(cluster);
    List<Long> launcher = List.of(ProcessHandle.current().pid());
    Map<Long, Set<String>> before = ListeningSockets.byProcess(pids);
    SocketWatch[] clusterWatch = new SocketWatch[1];
    SocketWatch launcherWatch =
        SocketWatch.during(
            () -> launcher, () -> clusterWatch[0] = SocketWatch.during(() -> pids, job));
    assertEquals(
        "the cluster listening beyond loopback: " + clusterWatch[0].seen(),
        Set.of(),
        clusterWatch[0].exposed());
    assertEquals(
        "the launcher listening beyond loopback: " + launcherWatch.seen(),
        Set.of(),
        launcherWatch.exposed());
    assertTrue(
        "servers the job opened in the "
            + cluster
            + " cluster's processes: "
            + clusterWatch[0].seen(),
        Clusters.opened(before, clusterWatch[0].seen()).size() >= 3);
  }
}
