package dev.xinfer.runtime.portable;

import java.util.Map;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.RunnerApi.Coder;
import org.apache.beam.model.pipeline.v1.RunnerApi.CombinePayload;
import org.apache.beam.model.pipeline.v1.RunnerApi.ComponentsOrBuilder;
import org.apache.beam.model.pipeline.v1.RunnerApi.FunctionSpec;
import org.apache.beam.model.pipeline.v1.RunnerApi.MessageWithComponents;
import org.apache.beam.model.pipeline.v1.RunnerApi.PCollection;
import org.apache.beam.model.pipeline.v1.RunnerApi.PTransform;
import org.apache.beam.model.pipeline.v1.RunnerApi.Trigger;
import org.apache.beam.sdk.util.construction.PTransformTranslation;
import org.apache.beam.sdk.util.construction.graph.ProtoOverrides;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.InvalidProtocolBufferException;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Combiner lifting for the portable pipeline, as Python's portable runners do and Beam's Java
 * portable Flink/Spark runners do not: each {@code Combine.perKey} becomes Precombine (in the SDK
 * harness, fused with its producer) → GroupByKey → MergeAccumulators → ExtractOutputs.
 *
 * <p>Without it the runner's GroupByKey receives every input element of the combine, which it
 * decodes, sorts and concatenates, and sends back to the SDK harness as one iterable: with Row
 * elements (RowCoder is a model coder the runner decodes field by field) that costs ~100 us per row
 * on Flink's batch runner, where the lifted form sends one accumulator per bundle and key.
 */
final class CombineLifting {
  private static final String COMBINE_PER_KEY = PTransformTranslation.COMBINE_PER_KEY_TRANSFORM_URN;
  private static final String KV = "beam:coder:kv:v1";
  private static final String ITERABLE = "beam:coder:iterable:v1";

  private CombineLifting() {}

  static RunnerApi.Pipeline lift(RunnerApi.Pipeline pipeline) {
    return ProtoOverrides.updateTransform(COMBINE_PER_KEY, pipeline, CombineLifting::replacement);
  }

  private static @Nullable MessageWithComponents replacement(
      String id, ComponentsOrBuilder components) {
    PTransform transform = components.getTransformsOrThrow(id);
    RunnerApi.Components.Builder added = RunnerApi.Components.newBuilder();
    String inputId = transform.getInputsMap().values().iterator().next();
    String outputId = transform.getOutputsMap().values().iterator().next();
    PCollection input = components.getPcollectionsOrThrow(inputId);
    PCollection output = components.getPcollectionsOrThrow(outputId);
    RunnerApi.WindowingStrategy windowing =
        components.getWindowingStrategiesOrThrow(input.getWindowingStrategyId());
    Coder elementCoder = components.getCodersOrThrow(input.getCoderId());
    CombinePayload payload;
    try {
      payload = CombinePayload.parseFrom(transform.getSpec().getPayload());
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalStateException("unreadable CombinePayload of " + id, e);
    }
    String environment = transform.getEnvironmentId();
    for (String sub : transform.getSubtransformsList()) {
      if (environment.isEmpty()) {
        environment = components.getTransformsOrThrow(sub).getEnvironmentId();
      }
    }
    if (!KV.equals(elementCoder.getSpec().getUrn())
        || payload.getAccumulatorCoderId().isEmpty()
        || environment.isEmpty()
        || windowing.getMergeStatus() != RunnerApi.MergeStatus.Enum.NON_MERGING
        || !liftable(windowing.getTrigger())) {
      return null; // left as it is, with its own subtransforms
    }
    String keyCoder = elementCoder.getComponentCoderIds(0);
    String acc = payload.getAccumulatorCoderId();
    String keyAcc = coder(components, added, id + "_lifted_kv_acc", KV, keyCoder, acc);
    String accs = coder(components, added, id + "_lifted_iter_acc", ITERABLE, acc);
    String keyAccs = coder(components, added, id + "_lifted_kv_iter_acc", KV, keyCoder, accs);
    String precombined = pcollection(components, added, id, "Precombine.out", keyAcc, input, input);
    String grouped = pcollection(components, added, id, "Group.out", keyAccs, input, output);
    String merged = pcollection(components, added, id, "Merge.out", keyAcc, input, output);

    // input -> Precombine -> GroupByKey -> MergeAccumulators -> ExtractOutputs -> output; the
    // runner's GroupByKey has no SDK environment and no payload.
    String[] chain = {inputId, precombined, grouped, merged, outputId};
    String[] suffixes = {"Precombine", "Group", "Merge", "ExtractOutputs"};
    String[] urns = {
      PTransformTranslation.COMBINE_PER_KEY_PRECOMBINE_TRANSFORM_URN,
      PTransformTranslation.GROUP_BY_KEY_TRANSFORM_URN,
      PTransformTranslation.COMBINE_PER_KEY_MERGE_ACCUMULATORS_TRANSFORM_URN,
      PTransformTranslation.COMBINE_PER_KEY_EXTRACT_OUTPUTS_TRANSFORM_URN
    };
    PTransform.Builder lifted = transform.toBuilder().clearSubtransforms();
    for (int i = 0; i < urns.length; i++) {
      boolean runner = urns[i].equals(PTransformTranslation.GROUP_BY_KEY_TRANSFORM_URN);
      lifted.addSubtransforms(
          step(
              components,
              added,
              id,
              transform.getUniqueName(),
              suffixes[i],
              urns[i],
              runner ? null : transform,
              chain[i],
              chain[i + 1],
              runner ? "" : environment));
    }
    return MessageWithComponents.newBuilder()
        .setPtransform(lifted.build())
        .setComponents(added)
        .build();
  }

  /** As Python's {@code is_compatible_with_combiner_lifting}. */
  private static boolean liftable(Trigger trigger) {
    switch (trigger.getTriggerCase()) {
      case DEFAULT:
      case ALWAYS:
      case NEVER:
      case AFTER_PROCESSING_TIME:
      case AFTER_SYNCHRONIZED_PROCESSING_TIME:
      case TRIGGER_NOT_SET:
        return true;
      case ELEMENT_COUNT:
        return trigger.getElementCount().getElementCount() == 1;
      case AFTER_END_OF_WINDOW:
        return liftable(trigger.getAfterEndOfWindow().getEarlyFirings())
            && liftable(trigger.getAfterEndOfWindow().getLateFirings());
      case AFTER_ANY:
        return trigger.getAfterAny().getSubtriggersList().stream()
            .allMatch(CombineLifting::liftable);
      case REPEAT:
        return liftable(trigger.getRepeat().getSubtrigger());
      default:
        return false;
    }
  }

  private static String unique(Map<String, ?> existing, Map<String, ?> added, String base) {
    String id = base;
    for (int i = 1; existing.containsKey(id) || added.containsKey(id); i++) {
      id = base + "_" + i;
    }
    return id;
  }

  private static String coder(
      ComponentsOrBuilder components,
      RunnerApi.Components.Builder added,
      String base,
      String urn,
      String... parts) {
    String id = unique(components.getCodersMap(), added.getCodersMap(), base);
    added.putCoders(
        id,
        Coder.newBuilder()
            .setSpec(FunctionSpec.newBuilder().setUrn(urn))
            .addAllComponentCoderIds(java.util.List.of(parts))
            .build());
    return id;
  }

  private static String pcollection(
      ComponentsOrBuilder components,
      RunnerApi.Components.Builder added,
      String transformId,
      String suffix,
      String coderId,
      PCollection windowingFrom,
      PCollection boundedFrom) {
    String id =
        unique(
            components.getPcollectionsMap(),
            added.getPcollectionsMap(),
            transformId + "/" + suffix);
    added.putPcollections(
        id,
        PCollection.newBuilder()
            .setUniqueName(id)
            .setCoderId(coderId)
            .setWindowingStrategyId(windowingFrom.getWindowingStrategyId())
            .setIsBounded(boundedFrom.getIsBounded())
            .build());
    return id;
  }

  private static String step(
      ComponentsOrBuilder components,
      RunnerApi.Components.Builder added,
      String transformId,
      String name,
      String suffix,
      String urn,
      PTransform payloadFrom,
      String in,
      String out,
      String environment) {
    String id =
        unique(components.getTransformsMap(), added.getTransformsMap(), transformId + "/" + suffix);
    FunctionSpec.Builder spec = FunctionSpec.newBuilder().setUrn(urn);
    if (payloadFrom != null) {
      spec.setPayload(payloadFrom.getSpec().getPayload());
    }
    PTransform.Builder step =
        PTransform.newBuilder()
            .setUniqueName(name + "/" + suffix)
            .setSpec(spec)
            .putInputs("in", in)
            .putOutputs("out", out)
            .setEnvironmentId(environment);
    if (payloadFrom != null) {
      step.putAllAnnotations(payloadFrom.getAnnotationsMap());
    }
    added.putTransforms(id, step.build());
    return id;
  }
}
