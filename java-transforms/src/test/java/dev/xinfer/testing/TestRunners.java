package dev.xinfer.testing;

import dev.xinfer.XinferOptions;
import java.util.ArrayList;
import java.util.List;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;

/** Pipelines for integration tests, on a runner the user would name, with the test's Python. */
public final class TestRunners {
  /** The runners every matrix test covers, with the flags of their embedded engines. */
  public static final List<String[]> EMBEDDED =
      List.of(
          new String[] {"FlinkRunner", "--flinkMaster=[local]", "--parallelism=1"},
          new String[] {"SparkRunner", "--sparkMaster=local[2]"});

  private TestRunners() {}

  /**
   * A pipeline on {@code runner} with {@code flags}, using the build's Python (-Dxinfer.python).
   */
  public static Pipeline pipeline(String runner, String... flags) {
    List<String> args = new ArrayList<>(List.of(flags));
    args.add("--runner=" + runner);
    PipelineOptions options = PipelineOptionsFactory.fromArgs(args.toArray(new String[0])).create();
    options.as(XinferOptions.class).setXinferPython(System.getProperty("xinfer.python"));
    return Pipeline.create(options);
  }
}
