package dev.xinfer.runtime.spark;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.xinfer.runtime.LoopbackFnServers;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Map;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.RunnerApi.Environment;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Struct;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * A Spark streaming job run again after its driver died: the first run leaves its job id and
 * environments beside its checkpoint (owner-only: the pool's secret is in them), and the second
 * serves the first run's worker-pool environment with its own pool.
 */
@RunWith(JUnit4.class)
public class SparkRecoveryTest {
  @Rule public final TemporaryFolder folder = new TemporaryFolder();

  private static Environment pool(int port, String secret) {
    return Environment.newBuilder()
        .setUrn(BeamUrns.getUrn(RunnerApi.StandardEnvironments.Environments.EXTERNAL))
        .setPayload(
            RunnerApi.ExternalPayload.newBuilder()
                .setEndpoint(
                    Endpoints.ApiServiceDescriptor.newBuilder().setUrl("127.0.0.1:" + port))
                .putParams("xinfer_token", secret)
                .build()
                .toByteString())
        .build();
  }

  private static JobInfo job(String id) {
    return JobInfo.create(id, "digits", "", Struct.getDefaultInstance());
  }

  @Test
  public void aRestoredJobIsServedByThisJvmsPoolInsteadOfTheDeadOnes() throws Exception {
    Path checkpoints = folder.getRoot().toPath().resolve("checkpoints");
    Environment first = pool(40001, "first-secret");
    SparkRecovery firstRun = new SparkRecovery(checkpoints, true);
    firstRun.prepare(Map.of("py", first));
    firstRun.started(true, job("first-run"), Map.of("py", first), 0);

    for (String file : new String[] {SparkRecovery.JOB_ID, SparkRecovery.ENVIRONMENTS}) {
      assertEquals(
          file,
          "rw-------",
          PosixFilePermissions.toString(Files.getPosixFilePermissions(checkpoints.resolve(file))));
    }
    assertEquals(
        "first-run",
        new String(
            Files.readAllBytes(checkpoints.resolve(SparkRecovery.JOB_ID)), StandardCharsets.UTF_8));

    Environment second = pool(40002, "second-secret");
    assertEquals(first, LoopbackFnServers.current(first));
    SparkRecovery secondRun = new SparkRecovery(checkpoints, true);
    secondRun.prepare(Map.of("py", second));
    secondRun.started(false, job("second-run"), Map.of("py", second), 0);
    try {
      assertEquals(second, LoopbackFnServers.current(first));
      assertEquals(second, LoopbackFnServers.current(second));
    } finally {
      secondRun.release();
    }
  }

  @Test
  public void aCheckpointWithoutXinfersStateFailsNamingTheFlagAndTheFix() {
    Path checkpoints = folder.getRoot().toPath();
    SparkRecovery recovery = new SparkRecovery(checkpoints, true);
    recovery.prepare(Map.of());
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class, () -> recovery.started(false, job("j"), Map.of(), 0));
    assertThat(e.getMessage(), containsString("--checkpointDir=" + checkpoints));
    assertThat(e.getMessage(), containsString("Give --checkpointDir a new folder"));
  }

  @Test
  public void aGraphThatSparkCannotRestoreLeavesNoStateToRestoreFrom() {
    Path checkpoints = folder.getRoot().toPath().resolve("checkpoints");
    SparkRecovery recovery = new SparkRecovery(checkpoints, true);
    recovery.prepare(Map.of());
    recovery.started(true, job("j"), Map.of("py", pool(40003, "s")), 1);
    assertFalse(Files.exists(checkpoints.resolve(SparkRecovery.JOB_ID)));
    assertTrue(
        checkpoints.toString(), !Files.exists(checkpoints.resolve(SparkRecovery.ENVIRONMENTS)));
  }

  /**
   * A run in a JVM that expanded other pipelines first has other environment ids: the one
   * worker-pool environment of this run serves the prior run's.
   */
  @Test
  public void thePriorPoolMapsToThisRunsPoolWhateverItsId() {
    Environment prior = pool(40004, "prior");
    Environment now = pool(40005, "now");
    Environment embedded = Environment.newBuilder().setUrn("beam:env:embedded:v1").build();
    assertEquals(
        Map.of(prior, now),
        SparkRecovery.replacements(
            Map.of("env-1", prior, "java", embedded), Map.of("env-7", now, "java", embedded)));
    assertEquals(
        Map.of(prior, now),
        SparkRecovery.replacements(Map.of("env-1", prior), Map.of("env-1", now)));
  }
}
