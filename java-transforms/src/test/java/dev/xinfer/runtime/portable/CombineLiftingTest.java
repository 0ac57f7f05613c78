package dev.xinfer.runtime.portable;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.stream.Collectors;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.windowing.Sessions;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.apache.beam.sdk.util.construction.PTransformTranslation;
import org.apache.beam.sdk.util.construction.PipelineTranslation;
import org.apache.beam.sdk.values.PCollection;
import org.joda.time.Duration;
import org.junit.Test;

public class CombineLiftingTest {
  private static RunnerApi.Pipeline translated(boolean sessions) {
    Pipeline p = Pipeline.create(PipelineOptionsFactory.create());
    PCollection<String> words = p.apply(Create.of("a", "b", "a"));
    if (sessions) {
      words = words.apply(Window.into(Sessions.withGapDuration(Duration.standardMinutes(1))));
    }
    words.apply(Count.perElement());
    return PipelineTranslation.toProto(p);
  }

  private static RunnerApi.PTransform combine(RunnerApi.Pipeline pipeline) {
    return pipeline.getComponents().getTransformsMap().values().stream()
        .filter(
            t -> t.getSpec().getUrn().equals(PTransformTranslation.COMBINE_PER_KEY_TRANSFORM_URN))
        .findFirst()
        .orElseThrow();
  }

  private static List<String> stepUrns(RunnerApi.Pipeline pipeline) {
    return combine(pipeline).getSubtransformsList().stream()
        .map(id -> pipeline.getComponents().getTransformsOrThrow(id).getSpec().getUrn())
        .collect(Collectors.toList());
  }

  @Test
  public void combinePerKeyBecomesPrecombineGroupMergeExtract() {
    RunnerApi.Pipeline lifted = CombineLifting.lift(translated(false));
    assertEquals(
        List.of(
            PTransformTranslation.COMBINE_PER_KEY_PRECOMBINE_TRANSFORM_URN,
            PTransformTranslation.GROUP_BY_KEY_TRANSFORM_URN,
            PTransformTranslation.COMBINE_PER_KEY_MERGE_ACCUMULATORS_TRANSFORM_URN,
            PTransformTranslation.COMBINE_PER_KEY_EXTRACT_OUTPUTS_TRANSFORM_URN),
        stepUrns(lifted));
    // The steps are wired in a chain from the combine's input to its output.
    RunnerApi.PTransform combine = combine(lifted);
    List<RunnerApi.PTransform> steps =
        combine.getSubtransformsList().stream()
            .map(id -> lifted.getComponents().getTransformsOrThrow(id))
            .collect(Collectors.toList());
    assertEquals(
        combine.getInputsMap().values().iterator().next(),
        steps.get(0).getInputsMap().values().iterator().next());
    for (int i = 1; i < steps.size(); i++) {
      assertEquals(
          steps.get(i - 1).getOutputsMap().values().iterator().next(),
          steps.get(i).getInputsMap().values().iterator().next());
    }
    assertEquals(
        combine.getOutputsMap().values().iterator().next(),
        steps.get(3).getOutputsMap().values().iterator().next());
    // Only the runner's GroupByKey has no SDK environment.
    assertTrue(steps.get(1).getEnvironmentId().isEmpty());
    assertTrue(!steps.get(0).getEnvironmentId().isEmpty());
  }

  @Test
  public void mergingWindowsAreLeftAsTheyAre() {
    RunnerApi.Pipeline original = translated(true);
    assertEquals(stepUrns(original), stepUrns(CombineLifting.lift(original)));
  }
}
