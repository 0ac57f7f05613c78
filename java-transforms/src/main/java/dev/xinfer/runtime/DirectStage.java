package dev.xinfer.runtime;

import java.util.List;
import java.util.stream.Collectors;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PipelineOptionsTranslation;
import org.apache.beam.sdk.util.construction.PipelineTranslation;
import org.apache.beam.sdk.util.construction.SdkComponents;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.sdk.util.construction.graph.FusedPipeline;
import org.apache.beam.sdk.util.construction.graph.GreedyPipelineFuser;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;

/**
 * A Python transform as a plain Java {@link ParDo}, for runners that cannot execute external
 * transforms (the DirectRunner).
 *
 * <p>The transform is expanded in a pipeline of its own (an empty input of the same schema, the
 * transform, a Java consumer), which is translated to its portable form and fused, as a portable
 * runner would. The fused Python stage then runs inside {@link PythonStageFn} over the Fn API, with
 * the Python worker pool the expansion service named.
 */
public final class DirectStage {
  private DirectStage() {}

  /**
   * Applies {@code pythonTransform} to {@code input} as a ParDo; the output has {@code
   * outputSchema}. Fails at construction when the Python stage needs state, timers or side inputs.
   */
  public static PCollection<Row> apply(
      PCollection<Row> input,
      String name,
      PTransform<PCollection<Row>, PCollection<Row>> pythonTransform,
      Schema outputSchema,
      String runnerName) {
    PipelineOptions shadowOptions = PipelineOptionsFactory.create();
    PortablePipelineOptions portable = shadowOptions.as(PortablePipelineOptions.class);
    portable.setDefaultEnvironmentType(Environments.ENVIRONMENT_EMBEDDED);
    portable.setFilesToStage(List.of());
    Pipeline shadow = Pipeline.create(shadowOptions);
    shadow
        .apply("Input", Create.empty(RowCoder.of(input.getSchema())))
        .setRowSchema(input.getSchema())
        .apply(name, pythonTransform)
        // A Java consumer keeps the Python stage's output in the fused graph.
        .apply("Consumer", MapElements.into(TypeDescriptors.strings()).via(Row::toString));
    RunnerApi.Pipeline proto =
        PipelineTranslation.toProto(shadow, SdkComponents.create(shadowOptions));
    FusedPipeline fused = GreedyPipelineFuser.fuse(proto);
    List<ExecutableStage> pythonStages =
        fused.getFusedStages().stream()
            .filter(
                stage -> !Environments.ENVIRONMENT_EMBEDDED.equals(stage.getEnvironment().getUrn()))
            .collect(Collectors.toList());
    if (pythonStages.size() != 1) {
      throw new IllegalStateException(
          "xinfer expected the Python transform to fuse into one stage for "
              + runnerName
              + ", found "
              + pythonStages.size()
              + "; run it with --runner=FlinkRunner or SparkRunner.");
    }
    ExecutableStage stage = pythonStages.get(0);
    if (!stage.getUserStates().isEmpty()
        || !stage.getTimers().isEmpty()
        || !stage.getSideInputs().isEmpty()) {
      throw new IllegalArgumentException(
          String.format(
              "This RunInference needs state, timers or side inputs inside its Python stage, "
                  + "which %s cannot run through xinfer; run it with --runner=FlinkRunner (batch "
                  + "or streaming) or --runner=SparkRunner.",
              runnerName));
    }
    String stageId = "xinfer-" + name + "-" + Integer.toHexString(proto.hashCode());
    return input
        .apply(
            name,
            ParDo.of(
                new PythonStageFn(
                    stageId, stage, PipelineOptionsTranslation.toProto(shadowOptions))))
        .setRowSchema(outputSchema);
  }
}
