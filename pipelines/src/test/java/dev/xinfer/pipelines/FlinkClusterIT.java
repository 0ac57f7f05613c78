package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;

import dev.xinfer.testing.Stalls;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.Timeout;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline on a real Flink standalone session cluster (JobManager and TaskManager in their
 * own JVMs) with a Python worker pool beside the TaskManager, as {@code ./xinfer cluster up flink}
 * starts them; the same checks as on the embedded engines. The build passes the cluster's addresses
 * ({@code -Dxinfer.flink.master}, {@code -Dxinfer.flink.pool}, {@code -Dxinfer.flink.pool.secret}).
 */
@RunWith(JUnit4.class)
public class FlinkClusterIT {
  @Rule public final Timeout stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static String[] clusterFlags(String... more) {
    String master = System.getProperty("xinfer.flink.master", "127.0.0.1:8081");
    String pool = System.getProperty("xinfer.flink.pool", "127.0.0.1:50000");
    String secret =
        System.getProperty("xinfer.flink.pool.secret", ".xinfer/clusters/flink/pool.secret");
    String[] flags = new String[more.length + 4];
    flags[0] = "--flinkMaster=" + master;
    flags[1] = "--xinferWorkerPool=" + pool;
    flags[2] = "--xinferWorkerPoolSecretFile=" + secret;
    flags[3] = "--parallelism=2";
    System.arraycopy(more, 0, flags, 4, more.length);
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
    DemoRuns.streaming(
        tmp.getRoot().toPath().resolve("streaming"),
        "FlinkRunner",
        600,
        clusterFlags("--checkpointingInterval=5000"));
  }
}
