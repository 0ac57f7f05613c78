package dev.xinfer.runtime.portable;

import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import dev.xinfer.runtime.LoopbackFnServers;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

@RunWith(JUnit4.class)
public class XinferRunnerTest {
  @Test
  public void aJobCarriesSdkWorkerParallelismOnlyWhenTheUserNamedIt() {
    PipelineOptions unnamed = PipelineOptionsFactory.fromArgs("--jobName=j").create();
    // Read, Beam's default travels with the job as if the user had named it; it is not set.
    unnamed.as(PortablePipelineOptions.class).getSdkWorkerParallelism();
    assertFalse(Engine.isSet(unnamed, "sdkWorkerParallelism"));
    assertTrue(
        PipelineOptionsTranslation.toProto(unnamed)
            .containsFields(LoopbackFnServers.SDK_WORKER_PARALLELISM));
    assertFalse(
        XinferRunner.jobOptions(unnamed, false)
            .containsFields(LoopbackFnServers.SDK_WORKER_PARALLELISM));
    PipelineOptions named = PipelineOptionsFactory.fromArgs("--sdkWorkerParallelism=1").create();
    assertTrue(Engine.isSet(named, "sdkWorkerParallelism"));
    assertTrue(
        XinferRunner.jobOptions(named, true)
            .containsFields(LoopbackFnServers.SDK_WORKER_PARALLELISM));
  }
}
