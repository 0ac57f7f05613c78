package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.portable.XinferRunner;
import org.apache.beam.runners.direct.DirectRunner;
import org.apache.beam.runners.flink.FlinkRunner;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

@RunWith(JUnit4.class)
public class RunnerBootstrapTest {
  @Test
  public void flinkRunnerIsSwappedForXinferRunnerAndRemembered() {
    PipelineOptions options = PipelineOptionsFactory.fromArgs("--runner=FlinkRunner").create();
    assertEquals(FlinkRunner.class, options.getRunner());
    RunnerBootstrap.prepare(options);
    assertEquals(XinferRunner.class, options.getRunner());
    assertEquals("FlinkRunner", options.as(XinferOptions.class).getXinferRequestedRunner());
    RunnerBootstrap.prepare(options);
    assertEquals(XinferRunner.class, options.getRunner());
  }

  @Test
  public void sparkRunnerIsSwappedForXinferRunnerAndRemembered() {
    PipelineOptions options = PipelineOptionsFactory.fromArgs("--runner=SparkRunner").create();
    RunnerBootstrap.prepare(options);
    assertEquals(XinferRunner.class, options.getRunner());
    assertEquals("SparkRunner", options.as(XinferOptions.class).getXinferRequestedRunner());
  }

  @Test
  public void directRunnerStaysAndRunsThePythonStageInADoFn() {
    PipelineOptions options = PipelineOptionsFactory.create();
    options.setRunner(DirectRunner.class);
    RunnerBootstrap.prepare(options);
    assertEquals(DirectRunner.class, options.getRunner());
    assertTrue(RunnerBootstrap.runsPythonStageInDoFn(options));
    options.setRunner(FlinkRunner.class);
    assertFalse(RunnerBootstrap.runsPythonStageInDoFn(options));
  }

  @Test
  public void otherRunnersGetAClearMessage() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> RunnerBootstrap.checkSupported("DataflowRunner"));
    assertThat(
        e.getMessage(),
        containsString(
            "RunInference cannot run on DataflowRunner in this version: it runs on "
                + "DirectRunner, FlinkRunner, SparkRunner"));
    assertThat(
        e.getMessage(),
        containsString("Pass --runner=FlinkRunner, --runner=SparkRunner or --runner=DirectRunner"));
  }

  @Test
  public void runnerNamesAreCheckedBeforeTheyAreParsed() {
    assertThat(
        assertThrows(
                IllegalArgumentException.class,
                () -> RunnerBootstrap.checkSupported("DataflowRunner"))
            .getMessage(),
        containsString("cannot run on DataflowRunner"));
    RunnerBootstrap.checkSupported("SparkRunner");
    RunnerBootstrap.checkSupported("flink");
    RunnerBootstrap.checkSupported("org.apache.beam.runners.flink.FlinkRunner");
    RunnerBootstrap.checkSupported("PortableRunner");
  }
}
