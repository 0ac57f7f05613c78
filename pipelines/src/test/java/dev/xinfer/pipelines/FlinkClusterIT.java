package dev.xinfer.pipelines;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

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
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
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
    String master = System.getProperty("xinfer.flink.master", "127.0.0.1:8081");
    String pool = System.getProperty("xinfer.flink.pool", "127.0.0.1:50000");
    String secret = Clusters.poolSecret("flink");
    String[] flags = new String[more.length + 5];
    flags[0] = "--flinkMaster=" + master;
    flags[1] = "--flinkConfDir=" + Clusters.dir("flink").resolve("client-conf");
    flags[2] = "--xinferWorkerPool=" + pool;
    flags[3] = "--xinferWorkerPoolSecretFile=" + secret;
    flags[4] = "--parallelism=2";
    System.arraycopy(more, 0, flags, 5, more.length);
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
  public void streamingOnTheClusterDeliversExactlyOnePredictionPerRecord() throws Exception {
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
  }

  @Test
  public void theRestApiServesOnlyClientsWithTheClustersKey() throws Exception {
    String master = System.getProperty("xinfer.flink.master", "127.0.0.1:8081");
    Path tls = Clusters.dir("flink").resolve("tls");
    char[] password =
        Files.readString(tls.resolve("password"), StandardCharsets.US_ASCII).trim().toCharArray();
    KeyStore trusted = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(tls.resolve("truststore.p12"))) {
      trusted.load(in, password);
    }
    TrustManagerFactory trust =
        TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    trust.init(trusted);
    KeyStore keys = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(tls.resolve("keystore.p12"))) {
      keys.load(in, password);
    }
    KeyManagerFactory key = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    key.init(keys, password);

    // With the cluster's key: the REST API answers.
    SSLContext withKey = SSLContext.getInstance("TLS");
    withKey.init(key.getKeyManagers(), trust.getTrustManagers(), null);
    HttpsURLConnection ok = https(master, "/overview", withKey);
    assertEquals(200, ok.getResponseCode());
    assertThat(
        new String(ok.getInputStream().readAllBytes(), UTF_8), containsString("taskmanagers"));

    // Trusting the server but holding no key: the handshake is refused, no job is submitted.
    SSLContext withoutKey = SSLContext.getInstance("TLS");
    withoutKey.init(null, trust.getTrustManagers(), null);
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
