package dev.xinfer.runtime;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.direct.DirectStage;
import dev.xinfer.runtime.portable.XinferRunner;
import java.util.Locale;
import java.util.Set;
import java.util.TreeSet;
import org.apache.beam.sdk.PipelineRunner;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.StreamingOptions;

/**
 * Makes the runner the user chose able to run xinfer's Python transforms.
 *
 * <p>The classic Flink and Spark runners reject cross-language transforms. When a pipeline that
 * holds xinfer's {@code RunInference} is built with {@code --runner=FlinkRunner} or {@code
 * --runner=SparkRunner}, this swaps the options' runner for {@link XinferRunner}, which runs the
 * same pipeline through Beam's portable runner for that engine. {@link
 * org.apache.beam.sdk.Pipeline#run()} picks the runner from the options when it runs, so the user's
 * code does not change.
 */
@Internal
public final class RunnerBootstrap {
  /** Runners xinfer runs RunInference on in this version. */
  public static final Set<String> SUPPORTED_RUNNERS =
      Set.of("FlinkRunner", "SparkRunner", "DirectRunner");

  /** Runners that run the Python stage inside a Java DoFn ({@link DirectStage}). */
  private static final Set<String> IN_DOFN_RUNNERS = Set.of("DirectRunner", "TestDirectRunner");

  /** Portable runners that already execute cross-language transforms as they are. */
  private static final Set<String> PORTABLE_RUNNERS =
      Set.of("PortableRunner", "TestPortableRunner", "XinferRunner");

  private RunnerBootstrap() {}

  /**
   * Fails with a message naming the supported runners when {@code runnerName} cannot run
   * RunInference; accepts simple names ({@code FlinkRunner}) and class names.
   */
  public static void checkSupported(String runnerName) {
    String simple = simpleName(runnerName);
    if (SUPPORTED_RUNNERS.contains(simple) || PORTABLE_RUNNERS.contains(simple)) {
      return;
    }
    throw new IllegalArgumentException(
        String.format(
            "xinfer's RunInference cannot run on %s in this version: it runs on %s. Pass "
                + "--runner=FlinkRunner, --runner=SparkRunner or --runner=DirectRunner.",
            simple, String.join(", ", new TreeSet<>(SUPPORTED_RUNNERS))));
  }

  /**
   * Prepares {@code options} so that the pipeline runs its Python transforms: called by
   * RunInference while the pipeline is built.
   */
  public static void prepare(PipelineOptions options) {
    Class<? extends PipelineRunner<?>> runner = options.getRunner();
    String simple = runner.getSimpleName();
    checkSupported(simple);
    if (SUPPORTED_RUNNERS.contains(simple) && !IN_DOFN_RUNNERS.contains(simple)) {
      options.as(XinferOptions.class).setXinferRequestedRunner(simple);
      options.setRunner(XinferRunner.class);
    }
  }

  /**
   * Whether RunInference must run its Python stage inside a Java DoFn for this pipeline's runner
   * (the DirectRunner, which cannot execute external transforms).
   */
  public static boolean runsPythonStageInDoFn(PipelineOptions options) {
    return IN_DOFN_RUNNERS.contains(options.getRunner().getSimpleName());
  }

  /**
   * Whether data moves between the engine and the SDK harnesses within a bundle, so that a stage's
   * outputs leave before its bundle ends: streaming on Flink (see {@code FlinkEngine}). Call after
   * {@link #prepare}.
   */
  public static boolean movesDataWithinBundles(PipelineOptions options) {
    return "FlinkRunner".equals(options.as(XinferOptions.class).getXinferRequestedRunner())
        && options.as(StreamingOptions.class).isStreaming();
  }

  private static String simpleName(String runnerName) {
    String name = runnerName.substring(runnerName.lastIndexOf('.') + 1);
    for (String known : SUPPORTED_RUNNERS) {
      if (known.toLowerCase(Locale.ROOT).equals(name.toLowerCase(Locale.ROOT))
          || known.toLowerCase(Locale.ROOT).equals(name.toLowerCase(Locale.ROOT) + "runner")) {
        return known;
      }
    }
    return name;
  }
}
