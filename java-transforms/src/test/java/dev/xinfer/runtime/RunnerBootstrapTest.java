package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

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
  public void directRunnerGetsAClearMessage() {
    PipelineOptions options = PipelineOptionsFactory.create();
    options.setRunner(DirectRunner.class);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> RunnerBootstrap.prepare(options));
    assertThat(
        e.getMessage(),
        containsString(
            "RunInference cannot run on DirectRunner in this version: it runs on "
                + "FlinkRunner and SparkRunner"));
    assertThat(e.getMessage(), containsString("Pass --runner=FlinkRunner or --runner=SparkRunner"));
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
