package dev.xinfer.pipelines;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.xinfer.testing.Clusters;
import dev.xinfer.testing.Stalls;
import java.io.IOException;
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline on a real Flink standalone session cluster (JobManager and TaskManager in their
 * own JVMs) with a Python worker pool beside the TaskManager, as {@code ./xinfer cluster up flink}
 * starts them; the same checks as on the embedded engines. The build passes the cluster's addresses
 * ({@code -Dxinfer.flink.master}, {@code -Dxinfer.flink.pool}) and folder ({@code
 * -Dxinfer.clusters}: pid files, the pool's secret, the TLS key). The streaming run checks the
 * sockets of every cluster process as it goes.
 */
@RunWith(JUnit4.class)
public class FlinkClusterIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static String[] clusterFlags(String... more) {
    return clusterFlags(2, more);
  }

  private static String[] clusterFlags(int parallelism, String... more) {
    String master = System.getProperty("xinfer.flink.master", "127.0.0.1:8081");
    String pool = System.getProperty("xinfer.flink.pool", "127.0.0.1:50000");
    String secret = Clusters.poolSecret("flink");
    String[] flags = new String[more.length + 6];
    flags[0] = "--flinkMaster=" + master;
    flags[1] = "--flinkConfDir=" + Clusters.dir("flink").resolve("client-conf");
    flags[2] = "--xinferWorkerPool=" + pool;
    flags[3] = "--xinferWorkerPoolSecretFile=" + secret;
    flags[4] = "--parallelism=" + parallelism;
    // The cluster provides xinfer, Beam and KafkaIO: the job ships its own classes only.
    flags[5] = Launcher.filesToStageFlag();
    System.arraycopy(more, 0, flags, 6, more.length);
    return flags;
  }

  @Test
  public void batchOnTheClusterPredictsEveryRecordAsPlainPython() throws Exception {
    Launcher.Summary summary =
        DemoRuns.batch(
            tmp.getRoot().toPath().resolve("predictions"), "FlinkRunner", clusterFlags());
    assertThat(summary.toString(), containsString("records=1797 failed=0"));
  }

  @Test
  public void aJobOnTwoTaskManagersRunsItsPythonStagesOnEachNodesOwnPool() throws Exception {
    Clusters.requireNodes("flink", 2);
    long[] started = {
      Clusters.sdkWorkersStarted("flink", 1), Clusters.sdkWorkersStarted("flink", 2)
    };
    Set<String> before = jobIds();
    // Parallelism 4 = 2 TaskManagers x 2 slots. The job names node 1's pool; node 2's tasks run
    // their Python stages on node 2's pool (XINFER_NODE_WORKER_POOL), a worker per slot.
    Launcher.Summary summary =
        DemoRuns.batch(
            tmp.getRoot().toPath().resolve("predictions"), "FlinkRunner", clusterFlags(4));
    assertThat(summary.toString(), containsString("records=1797 failed=0"));
    Set<String> jobs = jobIds();
    jobs.removeAll(before);
    assertEquals("the run's one job on the cluster: " + jobs, 1, jobs.size());
    // Flink's own count: the Python stage's tasks on each node took input (blocks of records).
    Map<String, Long> blocks = pythonStageInputsByNode(jobs.iterator().next());
    assertEquals(blocks.toString(), Set.of("node-1", "node-2"), blocks.keySet());
    for (Map.Entry<String, Long> node : blocks.entrySet()) {
      assertTrue(blocks.toString(), node.getValue() > 0);
    }
    // Each node's pool started the node's workers: one per slot.
    for (int node = 1; node <= 2; node++) {
      assertEquals(
          "SDK workers node " + node + "'s pool started for the job",
          2,
          Clusters.sdkWorkersStarted("flink", node) - started[node - 1]);
    }
  }

  /**
   * The elements (blocks of records) that the job's Python stage (RunInference's) read on each
   * TaskManager (its resource id, {@code node-K}), from the JobManager's per-subtask counts.
   */
  private static Map<String, Long> pythonStageInputsByNode(String job) throws Exception {
    Map<String, Long> records = new TreeMap<>();
    for (JsonNode vertex : rest("/jobs/" + job).path("vertices")) {
      if (!vertex.path("name").asText().contains("RowInference/Inference")) {
        continue;
      }
      for (JsonNode subtask :
          rest("/jobs/" + job + "/vertices/" + vertex.path("id").asText()).path("subtasks")) {
        records.merge(
            subtask.path("taskmanager-id").asText(),
            subtask.path("metrics").path("read-records").asLong(),
            Long::sum);
      }
    }
    return records;
  }

  @Test
  public void streamingOnTheClusterDeliversExactlyOnePredictionPerRecord() throws Exception {
    Set<String> before = jobIds();
    ClusterSockets.check(
        "flink",
        () ->
            DemoRuns.streaming(
                tmp.getRoot().toPath().resolve("streaming"),
                "FlinkRunner",
                600,
                // Exactly once (the default): the predictions commit only with completed
                // checkpoints.
                clusterFlags("--checkpointingInterval=1000")));
    Set<String> jobs = jobIds();
    jobs.removeAll(before);
    assertEquals("the run's one job on the cluster: " + jobs, 1, jobs.size());
    // The JobManager's own count: the job's checkpoints completed, and it never restored from
    // one (no failover in a run without faults). Some count as failed: the ones triggered while
    // the tasks still start (declined, "tasks not ready") and the one the cancel cuts short.
    JsonNode counts = rest("/jobs/" + jobs.iterator().next() + "/checkpoints").path("counts");
    assertTrue(counts.toString(), counts.path("completed").asInt() >= 1);
    assertEquals(counts.toString(), 0, counts.path("restored").asInt());
  }

  /** The ids of the jobs the cluster's JobManager knows (running and ended). */
  private static Set<String> jobIds() throws Exception {
    Set<String> ids = new HashSet<>();
    for (JsonNode job : rest("/jobs").path("jobs")) {
      ids.add(job.path("id").asText());
    }
    return ids;
  }

  /** A GET of the cluster's REST API with the cluster's key (mutual TLS), as JSON. */
  private static JsonNode rest(String path) throws Exception {
    SSLContext withKey = SSLContext.getInstance("TLS");
    withKey.init(keyManagers(), trustManagers(), null);
    HttpsURLConnection connection = https(master(), path, withKey);
    assertEquals(path, 200, connection.getResponseCode());
    try (InputStream in = connection.getInputStream()) {
      return new ObjectMapper().readTree(in);
    }
  }

  private static String master() {
    return System.getProperty("xinfer.flink.master", "127.0.0.1:8081");
  }

  private static char[] tlsPassword() throws IOException {
    return Files.readString(tls().resolve("password"), StandardCharsets.US_ASCII)
        .trim()
        .toCharArray();
  }

  private static Path tls() {
    return Clusters.dir("flink").resolve("tls");
  }

  /** Trust in the cluster's certificate (its trust store). */
  private static TrustManager[] trustManagers() throws Exception {
    KeyStore trusted = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(tls().resolve("truststore.p12"))) {
      trusted.load(in, tlsPassword());
    }
    TrustManagerFactory trust =
        TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    trust.init(trusted);
    return trust.getTrustManagers();
  }

  /** The cluster's key, which its REST API asks clients for. */
  private static KeyManager[] keyManagers() throws Exception {
    KeyStore keys = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(tls().resolve("keystore.p12"))) {
      keys.load(in, tlsPassword());
    }
    KeyManagerFactory key = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    key.init(keys, tlsPassword());
    return key.getKeyManagers();
  }

  @Test
  public void theRestApiServesOnlyClientsWithTheClustersKey() throws Exception {
    String master = master();
    // With the cluster's key: the REST API answers.
    SSLContext withKey = SSLContext.getInstance("TLS");
    withKey.init(keyManagers(), trustManagers(), null);
    HttpsURLConnection ok = https(master, "/overview", withKey);
    assertEquals(200, ok.getResponseCode());
    assertThat(
        new String(ok.getInputStream().readAllBytes(), UTF_8), containsString("taskmanagers"));

    // Trusting the server but holding no key: the handshake is refused, no job is submitted.
    SSLContext withoutKey = SSLContext.getInstance("TLS");
    withoutKey.init(null, trustManagers(), null);
    HttpsURLConnection refused = https(master, "/jobs", withoutKey);
    refused.setRequestMethod("POST");
    refused.setDoOutput(true);
    assertThrows(
        IOException.class,
        () -> {
          refused.getOutputStream().write("{}".getBytes(UTF_8));
          refused.getResponseCode();
        });

    // Plain HTTP is only redirected to HTTPS: nothing is submitted or served.
    HttpURLConnection plain =
        (HttpURLConnection) URI.create("http://" + master + "/jobs").toURL().openConnection();
    plain.setInstanceFollowRedirects(false);
    plain.setRequestMethod("POST");
    plain.setDoOutput(true);
    plain.setReadTimeout(10_000);
    plain.getOutputStream().write("{}".getBytes(UTF_8));
    assertEquals(301, plain.getResponseCode());
    assertThat(plain.getHeaderField("location"), containsString("https://"));
  }

  private static HttpsURLConnection https(String master, String path, SSLContext context)
      throws IOException {
    HttpsURLConnection connection =
        (HttpsURLConnection) URI.create("https://" + master + path).toURL().openConnection();
    connection.setSSLSocketFactory(context.getSocketFactory());
    connection.setConnectTimeout(10_000);
    connection.setReadTimeout(10_000);
    return connection;
  }
}
