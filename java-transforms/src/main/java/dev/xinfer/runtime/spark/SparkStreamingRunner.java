package dev.xinfer.runtime.spark;

import static org.apache.beam.runners.spark.SparkCommonPipelineOptions.prepareFilesToStage;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.beam.model.jobmanagement.v1.JobApi;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.fnexecution.wire.WireCoders;
import org.apache.beam.runners.jobsubmission.PortablePipelineResult;
import org.apache.beam.runners.jobsubmission.PortablePipelineRunner;
import org.apache.beam.runners.spark.SparkPipelineOptions;
import org.apache.beam.runners.spark.SparkPortableStreamingPipelineOptions;
import org.apache.beam.runners.spark.io.SparkUnboundedSource;
import org.apache.beam.runners.spark.metrics.MetricsAccumulator;
import org.apache.beam.runners.spark.translation.Dataset;
import org.apache.beam.runners.spark.translation.SparkContextFactory;
import org.apache.beam.runners.spark.translation.SparkStreamingPortablePipelineTranslator;
import org.apache.beam.runners.spark.translation.SparkStreamingTranslationContext;
import org.apache.beam.runners.spark.translation.streaming.UnboundedDataset;
import org.apache.beam.runners.spark.util.GlobalWatermarkHolder;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.io.UnboundedSource;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.beam.sdk.metrics.MetricsEnvironment;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.util.WindowedValue;
import org.apache.beam.sdk.util.construction.PTransformTranslation;
import org.apache.beam.sdk.util.construction.ReadTranslation;
import org.apache.beam.sdk.util.construction.RehydratedComponents;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.sdk.util.construction.graph.GreedyPipelineFuser;
import org.apache.beam.sdk.util.construction.graph.PipelineNode;
import org.apache.beam.sdk.util.construction.graph.ProtoOverrides;
import org.apache.beam.sdk.util.construction.graph.SplittableParDoExpander;
import org.apache.beam.sdk.util.construction.graph.TrivialNativeTransformExpander;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.streaming.DStreamGraph;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.api.java.JavaStreamingListenerWrapper;
import org.apache.spark.streaming.dstream.InputDStream;
import org.apache.spark.streaming.dstream.QueueInputDStream;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Duration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Beam's portable Spark streaming runner, plus unbounded reads.
 *
 * <p>Beam's portable Spark streaming translator knows Impulse, GroupByKey, Flatten, Reshuffle and
 * executable stages only: an unbounded source (KafkaIO) can run neither as a native Read nor as a
 * splittable DoFn (it cannot checkpoint those). This runner does what {@code SparkPipelineRunner}
 * does in streaming mode, with a translator that also runs each unbounded {@code
 * beam:transform:read:v1} as a Spark input stream, through the classic Spark runner's {@link
 * SparkUnboundedSource} (micro-batches, checkpointed reader state, watermarks), its elements
 * converted to the form the next stage expects on the wire.
 */
final class SparkStreamingRunner implements PortablePipelineRunner {
  private static final Logger LOG = LoggerFactory.getLogger(SparkStreamingRunner.class);

  private final SparkPipelineOptions options;
  private final @Nullable SparkRecovery recovery;

  /**
   * A runner of {@code options}' streaming jobs; with {@code recovery}, a job goes on from the
   * checkpoint that a run before it left in its checkpoint folder, if there is one.
   */
  SparkStreamingRunner(SparkPipelineOptions options, @Nullable SparkRecovery recovery) {
    this.options = options;
    this.recovery = recovery;
  }

  @Override
  public PortablePipelineResult run(RunnerApi.Pipeline pipeline, JobInfo jobInfo) {
    UnboundedReadTranslator translator = new UnboundedReadTranslator();
    RunnerApi.Pipeline withSdfExpanded =
        ProtoOverrides.updateTransform(
            PTransformTranslation.PAR_DO_TRANSFORM_URN,
            pipeline,
            SplittableParDoExpander.createSizedReplacement());
    RunnerApi.Pipeline trimmed =
        TrivialNativeTransformExpander.forKnownUrns(withSdfExpanded, translator.knownUrns());
    RunnerApi.Pipeline fused = GreedyPipelineFuser.fuse(trimmed).toPipeline();

    prepareFilesToStage(options);
    JavaSparkContext jsc = SparkContextFactory.getSparkContext(options);
    MetricsEnvironment.setMetricsSupported(true);
    MetricsAccumulator.init(options, jsc);
    Map<String, RunnerApi.Environment> environments = fused.getComponents().getEnvironmentsMap();
    JavaStreamingContext jssc;
    if (recovery == null) {
      jssc = streamingContext(translator, fused, jsc, jobInfo);
    } else {
      boolean[] created = {false};
      recovery.prepare(environments);
      jssc =
          JavaStreamingContext.getOrCreate(
              options.getCheckpointDir(),
              () -> {
                created[0] = true;
                return streamingContext(translator, fused, jsc, jobInfo);
              });
      recovery.started(created[0], jobInfo, environments, queueStreams(jssc));
    }
    jssc.addStreamingListener(
        new JavaStreamingListenerWrapper(
            new MetricsAccumulator.AccumulatorCheckpointingSparkListener()));
    jssc.addStreamingListener(
        new JavaStreamingListenerWrapper(
            new GlobalWatermarkHolder.WatermarkAdvancingStreamingListener()));
    LOG.info("Job {}: streaming on Spark master {}", jobInfo.jobId(), jsc.master());
    jssc.start();
    long timeout = options.as(SparkPortableStreamingPipelineOptions.class).getStreamingTimeoutMs();
    try {
      jssc.awaitTerminationOrTimeout(timeout);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    jssc.stop(true, false);
    SparkContextFactory.stopSparkContext(jsc);
    return new Ended();
  }

  /** The queue streams of {@code jssc}'s graph: Spark cannot restore those from a checkpoint. */
  static long queueStreams(JavaStreamingContext jssc) {
    return java.util.Arrays.stream(jssc.ssc().graph().getInputStreams())
        .filter(stream -> stream instanceof QueueInputDStream)
        .count();
  }

  /** A new streaming context with the pipeline translated onto it, checkpointing to the folder. */
  private JavaStreamingContext streamingContext(
      UnboundedReadTranslator translator,
      RunnerApi.Pipeline fused,
      JavaSparkContext jsc,
      JobInfo jobInfo) {
    ReadContext context = (ReadContext) translator.createTranslationContext(jsc, options, jobInfo);
    JavaStreamingContext jssc = context.getStreamingContext();
    jssc.checkpoint(options.getCheckpointDir());
    translator.translate(fused, context);
    context.computeOutputs();
    context.dropStandInStreams();
    return jssc;
  }

  /** The result of a streaming job that has stopped (timed out or cancelled). */
  private static final class Ended implements PortablePipelineResult {
    @Override
    public State getState() {
      return State.DONE;
    }

    @Override
    public State cancel() {
      return State.DONE;
    }

    @Override
    public State waitUntilFinish(Duration duration) {
      return State.DONE;
    }

    @Override
    public State waitUntilFinish() {
      return State.DONE;
    }

    @Override
    public MetricResults metrics() {
      throw new UnsupportedOperationException("metrics of xinfer's Spark streaming jobs");
    }

    @Override
    public JobApi.MetricResults portableMetrics() {
      return JobApi.MetricResults.getDefaultInstance();
    }
  }

  /**
   * Beam's streaming translator, with unbounded reads: each becomes an Impulse for the inherited
   * translation, and the context swaps the Impulse's stream for the source's.
   */
  static final class UnboundedReadTranslator extends SparkStreamingPortablePipelineTranslator {
    @Override
    public Set<String> knownUrns() {
      Set<String> urns = new java.util.HashSet<>(super.knownUrns());
      urns.add(PTransformTranslation.READ_TRANSFORM_URN);
      return urns;
    }

    @Override
    public SparkStreamingTranslationContext createTranslationContext(
        JavaSparkContext jsc, SparkPipelineOptions options, JobInfo jobInfo) {
      return new ReadContext(jsc, options, jobInfo);
    }

    @Override
    public void translate(RunnerApi.Pipeline pipeline, SparkStreamingTranslationContext context) {
      ReadContext readContext = (ReadContext) context;
      RunnerApi.Components.Builder components = pipeline.getComponents().toBuilder();
      for (Map.Entry<String, RunnerApi.PTransform> entry :
          pipeline.getComponents().getTransformsMap().entrySet()) {
        RunnerApi.PTransform transform = entry.getValue();
        if (ExecutableStage.URN.equals(transform.getSpec().getUrn())
            && transform.getOutputsCount() > 1) {
          readContext.multiOutputStages.add(entry.getKey());
        }
        if (!PTransformTranslation.READ_TRANSFORM_URN.equals(transform.getSpec().getUrn())) {
          continue;
        }
        RunnerApi.ReadPayload payload;
        try {
          payload = RunnerApi.ReadPayload.parseFrom(transform.getSpec().getPayload());
        } catch (IOException e) {
          throw new IllegalStateException("unreadable Read payload of " + entry.getKey(), e);
        }
        if (payload.getIsBounded() != RunnerApi.IsBounded.Enum.UNBOUNDED) {
          throw new IllegalArgumentException(
              "xinfer runs unbounded reads on Spark streaming; "
                  + transform.getUniqueName()
                  + " is a bounded read. Run bounded inputs in batch mode.");
        }
        String output = transform.getOutputsMap().values().iterator().next();
        readContext.reads.put(
            output, new PendingRead(transform.getUniqueName(), payload, pipeline.getComponents()));
        components.putTransforms(
            entry.getKey(),
            transform.toBuilder()
                .setSpec(
                    RunnerApi.FunctionSpec.newBuilder()
                        .setUrn(PTransformTranslation.IMPULSE_TRANSFORM_URN))
                .build());
      }
      super.translate(pipeline.toBuilder().setComponents(components).build(), context);
    }
  }

  /** An unbounded read waiting for the translation to reach its output. */
  private static final class PendingRead {
    final String name;
    final RunnerApi.ReadPayload payload;
    final RunnerApi.Components components;

    PendingRead(String name, RunnerApi.ReadPayload payload, RunnerApi.Components components) {
      this.name = name;
      this.payload = payload;
      this.components = components;
    }
  }

  /** Puts the source's stream where the translation of a read's stand-in Impulse goes. */
  private static final class ReadContext extends SparkStreamingTranslationContext {
    final Map<String, PendingRead> reads = new HashMap<>();

    /** The ids of the queue streams Beam made for the reads' stand-in Impulses. */
    private final Set<Integer> standIns = new java.util.HashSet<>();

    /**
     * Executable stages with more than one output (RunInference with its dead-letter output): each
     * output is a stream of its own over the stage's, and Beam's streaming translation does not
     * persist the stage's, so every output ran the whole stage again (each record scored once per
     * output). Their stream is kept in memory for its batch instead.
     */
    final java.util.Set<String> multiOutputStages = new java.util.HashSet<>();

    ReadContext(JavaSparkContext jsc, SparkPipelineOptions options, JobInfo jobInfo) {
      super(jsc, options, jobInfo);
    }

    @Override
    public void pushDataset(String pCollectionId, Dataset dataset) {
      if (multiOutputStages.contains(pCollectionId)) {
        // The stage's intermediate dataset is pushed under the stage's transform id.
        dataset.cache("MEMORY_ONLY", null);
      }
      PendingRead read = reads.remove(pCollectionId);
      if (read != null) {
        standIns.addAll(((UnboundedDataset<?>) dataset).getStreamSources());
      }
      super.pushDataset(pCollectionId, read == null ? dataset : readStream(pCollectionId, read));
    }

    /**
     * Takes the stand-in Impulses' queue streams, which nothing reads, out of the streaming graph:
     * Spark cannot restore a queue stream from a checkpoint, so a graph with one could not go on
     * after its driver died. Another Impulse (a {@code Create} in a streaming pipeline) keeps its
     * queue stream ({@link SparkStreamingRunner#queueStreams}).
     */
    void dropStandInStreams() {
      DStreamGraph graph = getStreamingContext().ssc().graph();
      List<InputDStream<?>> kept = new ArrayList<>();
      for (InputDStream<?> stream : graph.getInputStreams()) {
        if (!(stream instanceof QueueInputDStream && standIns.contains(stream.id()))) {
          kept.add(stream);
        }
      }
      scala.collection.mutable.ArraySeq<InputDStream<?>> streams =
          new scala.collection.mutable.ArraySeq<>(kept.size());
      for (int i = 0; i < kept.size(); i++) {
        streams.update(i, kept.get(i));
      }
      try {
        java.lang.reflect.Field field = DStreamGraph.class.getDeclaredField("inputStreams");
        field.setAccessible(true);
        synchronized (graph) {
          field.set(graph, streams);
        }
      } catch (ReflectiveOperationException e) {
        throw new IllegalStateException(
            "Spark's DStreamGraph has no inputStreams field: this Spark version is not the one "
                + "xinfer was built with (3.2)",
            e);
      }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private Dataset readStream(String pCollectionId, PendingRead read) {
      UnboundedSource<Object, ?> source =
          (UnboundedSource<Object, ?>) ReadTranslation.unboundedSourceFromProto(read.payload);
      UnboundedDataset<Object> sourceData =
          SparkUnboundedSource.read(
              getStreamingContext(), getSerializableOptions(), (UnboundedSource) source, read.name);
      Coder<WindowedValue<Object>> sdkCoder = sdkCoder(pCollectionId, read.components);
      Coder<WindowedValue<Object>> wireCoder = wireCoder(pCollectionId, read.components);
      return new UnboundedDataset<>(
          sourceData
              .getDStream()
              .map(
                  value ->
                      CoderUtils.decodeFromByteArray(
                          wireCoder, CoderUtils.encodeToByteArray(sdkCoder, value))),
          sourceData.getStreamSources());
    }
  }

  /** The coder the SDK harness would use for the PCollection's elements. */
  @SuppressWarnings("unchecked")
  private static Coder<WindowedValue<Object>> sdkCoder(
      String pCollectionId, RunnerApi.Components components) {
    PipelineNode.PCollectionNode node =
        PipelineNode.pCollection(pCollectionId, components.getPcollectionsOrThrow(pCollectionId));
    RunnerApi.Components.Builder builder = components.toBuilder();
    String coderId =
        WireCoders.addSdkWireCoder(
            node, builder, RunnerApi.ExecutableStagePayload.WireCoderSetting.getDefaultInstance());
    try {
      return (Coder<WindowedValue<Object>>)
          RehydratedComponents.forComponents(builder.build()).getCoder(coderId);
    } catch (IOException e) {
      throw new IllegalStateException("no SDK coder for " + pCollectionId, e);
    }
  }

  /** The coder the runner sees the PCollection's elements in (unknown coders: bytes). */
  @SuppressWarnings("unchecked")
  private static Coder<WindowedValue<Object>> wireCoder(
      String pCollectionId, RunnerApi.Components components) {
    PipelineNode.PCollectionNode node =
        PipelineNode.pCollection(pCollectionId, components.getPcollectionsOrThrow(pCollectionId));
    try {
      return (Coder<WindowedValue<Object>>)
          (Coder<?>) WireCoders.instantiateRunnerWireCoder(node, components);
    } catch (IOException e) {
      throw new IllegalStateException("no wire coder for " + pCollectionId, e);
    }
  }
}
