package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertThrows;

import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

@RunWith(JUnit4.class)
public class LoopbackFnServersTest {
  private static JobInfo job(String... args) {
    return JobInfo.create(
        "job",
        "name",
        "",
        PipelineOptionsTranslation.toProto(PipelineOptionsFactory.fromArgs(args).create()));
  }

  private static int sdkWorkers(JobInfo job) {
    return PipelineOptionsTranslation.fromProto(job.pipelineOptions())
        .as(PortablePipelineOptions.class)
        .getSdkWorkerParallelism();
  }

  @Test
  public void aNodeRunsOnePythonWorkerPerSlotUnlessTheJobNamesItsOwnNumber() {
    JobInfo job = job("--jobName=j");
    assertEquals("Beam's default", 1, sdkWorkers(job));
    assertEquals(4, sdkWorkers(LoopbackFnServers.withNodeSdkWorkers(job, "4")));
    assertEquals(2, sdkWorkers(LoopbackFnServers.withNodeSdkWorkers(job, " 2\n")));
    // The rest of the job's options are unchanged.
    assertEquals(
        "j",
        PipelineOptionsTranslation.fromProto(
                LoopbackFnServers.withNodeSdkWorkers(job, "4").pipelineOptions())
            .getJobName());
    // A job that names its number keeps it; a node that says no slots leaves the job as it is.
    JobInfo named = job("--sdkWorkerParallelism=3");
    assertSame(named, LoopbackFnServers.withNodeSdkWorkers(named, "4"));
    assertSame(job, LoopbackFnServers.withNodeSdkWorkers(job, null));
    assertSame(job, LoopbackFnServers.withNodeSdkWorkers(job, ""));
  }

  @Test
  public void aContextRunsTheWorkersTheJobOrItsNodeAsksFor() {
    assertEquals(1, LoopbackFnServers.sdkWorkers(job()));
    assertEquals(3, LoopbackFnServers.sdkWorkers(job("--sdkWorkerParallelism=3")));
    assertEquals(2, LoopbackFnServers.sdkWorkers(LoopbackFnServers.withNodeSdkWorkers(job(), "2")));
    // Beam's 0: the cores but one, at least one.
    assertEquals(
        Math.max(Runtime.getRuntime().availableProcessors() - 1, 1),
        LoopbackFnServers.sdkWorkers(job("--sdkWorkerParallelism=0")));
  }

  @Test
  public void aNodeWhoseSlotsAreNoNumberIsToldWhatToSet() {
    for (String slots : new String[] {"two", "0", "-1"}) {
      IllegalStateException e =
          assertThrows(
              IllegalStateException.class,
              () -> LoopbackFnServers.withNodeSdkWorkers(job(), slots));
      assertThat(e.getMessage(), containsString("XINFER_NODE_SLOTS='" + slots + "'"));
      assertThat(e.getMessage(), containsString("positive number"));
    }
  }
}
