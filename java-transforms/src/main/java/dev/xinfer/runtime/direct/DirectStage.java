package dev.xinfer.runtime.direct;

import dev.xinfer.runtime.PythonTransforms;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
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
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.TupleTag;
import org.apache.beam.sdk.values.TupleTagList;
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
@Internal
public final class DirectStage {
  private DirectStage() {}

  /**
   * Applies {@code pythonTransform} to {@code input} as a ParDo. The outputs are tagged by the
   * Python transform's output names and carry the coders the expansion gave them. Fails at
   * construction when the Python stage needs state, timers or side inputs.
   */
  public static PCollectionTuple apply(
      PCollection<?> input,
      String name,
      PTransform<PCollection<?>, PCollectionTuple> pythonTransform,
      String runnerName) {
    PipelineOptions shadowOptions = PipelineOptionsFactory.create();
    PortablePipelineOptions portable = shadowOptions.as(PortablePipelineOptions.class);
    portable.setDefaultEnvironmentType(Environments.ENVIRONMENT_EMBEDDED);
    portable.setFilesToStage(List.of());
    Pipeline shadow = Pipeline.create(shadowOptions);
    PCollection<?> shadowInput = shadow.apply("Input", emptyOf(input.getCoder()));
    Map<String, PCollection<?>> byName = new LinkedHashMap<>();
    shadowInput.apply(name, pythonTransform).getAll().forEach((t, pc) -> byName.put(t.getId(), pc));
    // A Java consumer per output keeps the Python stage's outputs in the fused graph.
    byName.forEach(
        (outputName, pc) ->
            pc.apply(
                "Consume-" + outputName,
                MapElements.into(TypeDescriptors.strings()).via(String::valueOf)));
    SdkComponents components = SdkComponents.create(shadowOptions);
    RunnerApi.Pipeline proto = PipelineTranslation.toProto(shadow, components);
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
              "This RunInference needs state, timers or side inputs inside its Python stage "
                  + "(withMaxBatchWait uses both), which %s cannot run through xinfer; drop that "
                  + "setting, or run it with --runner=FlinkRunner (batch or streaming) or "
                  + "--runner=SparkRunner.",
              runnerName));
    }
    Map<String, String> tagByPCollectionId = new LinkedHashMap<>();
    List<TupleTag<?>> tags = new ArrayList<>();
    for (Map.Entry<String, PCollection<?>> e : byName.entrySet()) {
      String id = pCollectionId(components, e.getValue());
      tagByPCollectionId.put(id, e.getKey());
      tags.add(new TupleTag<>(e.getKey()));
    }
    String stageId = "xinfer-" + name + "-" + Integer.toHexString(proto.hashCode());
    @SuppressWarnings("unchecked")
    TupleTag<Object> mainTag = (TupleTag<Object>) tags.get(0);
    @SuppressWarnings({"unchecked", "rawtypes"})
    PCollectionTuple outputs =
        (PCollectionTuple)
            ((PCollection) input)
                .apply(
                    name,
                    ParDo.of(
                            new PythonStageFn(
                                stageId,
                                stage,
                                PipelineOptionsTranslation.toProto(shadowOptions),
                                tagByPCollectionId))
                        .withOutputTags(mainTag, TupleTagList.of(tags.subList(1, tags.size()))));
    byName.forEach(
        (outputName, pc) ->
            PythonTransforms.setCoder(outputs.get(new TupleTag<>(outputName)), pc.getCoder()));
    return outputs;
  }

  private static String pCollectionId(SdkComponents components, PCollection<?> pc) {
    try {
      return components.registerPCollection(pc);
    } catch (IOException e) {
      throw new UncheckedIOException(
          "Cannot translate " + pc.getName() + " for the Python stage", e);
    }
  }

  @SuppressWarnings({"unchecked", "rawtypes"})
  private static PTransform<PBegin, PCollection<?>> emptyOf(Coder<?> coder) {
    return (PTransform) Create.empty((Coder) coder);
  }
}
