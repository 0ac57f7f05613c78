package dev.xinfer.runtime;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.fnexecution.control.BundleProgressHandler;
import org.apache.beam.runners.fnexecution.control.JobBundleFactory;
import org.apache.beam.runners.fnexecution.control.RemoteBundle;
import org.apache.beam.runners.fnexecution.control.StageBundleFactory;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.fnexecution.state.StateRequestHandler;
import org.apache.beam.sdk.fn.data.FnDataReceiver;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.util.WindowedValue;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Struct;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Runs a fused Python stage (xinfer's RunInference, expanded by the Python expansion service) from
 * inside a Java {@link DoFn}, the way the portable runners run executable stages: each bundle of
 * the DoFn is a bundle of the SDK worker, over the Fn API. This lets runners that cannot execute
 * external transforms, such as the DirectRunner, run the pipeline.
 */
final class PythonStageFn extends DoFn<Row, Row> {
  /** One job bundle factory (and so one SDK worker) per stage, shared by the DoFn's instances. */
  private static final Map<String, JobBundleFactory> FACTORIES = new ConcurrentHashMap<>();

  private final String stageId;
  private final byte[] stagePayload;
  private final byte[] pipelineOptions;

  private transient @Nullable StageBundleFactory stageBundleFactory;
  private transient @Nullable RemoteBundle bundle;
  private transient @Nullable FnDataReceiver<WindowedValue<?>> input;
  private transient ConcurrentLinkedQueue<WindowedValue<Row>> outputs;

  PythonStageFn(String stageId, ExecutableStage stage, Struct pipelineOptions) {
    this.stageId = stageId;
    this.stagePayload = stage.toPTransform(stageId).getSpec().getPayload().toByteArray();
    this.pipelineOptions = pipelineOptions.toByteArray();
  }

  @Setup
  public void setup() throws Exception {
    ExecutableStage stage =
        ExecutableStage.fromPayload(RunnerApi.ExecutableStagePayload.parseFrom(stagePayload));
    Struct options = Struct.parseFrom(pipelineOptions);
    JobBundleFactory factory =
        FACTORIES.computeIfAbsent(
            stageId,
            id -> {
              JobBundleFactory created =
                  LoopbackFnServers.jobBundleFactory(JobInfo.create(id, id, "", options));
              Runtime.getRuntime().addShutdownHook(new Thread(() -> close(created)));
              return created;
            });
    stageBundleFactory = factory.forStage(stage);
  }

  @StartBundle
  public void startBundle() throws Exception {
    ConcurrentLinkedQueue<WindowedValue<Row>> received = new ConcurrentLinkedQueue<>();
    outputs = received;
    bundle =
        stageBundleFactory.getBundle(
            new org.apache.beam.runners.fnexecution.control.OutputReceiverFactory() {
              @Override
              @SuppressWarnings("unchecked")
              public <OutputT> FnDataReceiver<OutputT> create(String pCollectionId) {
                return value -> received.add((WindowedValue<Row>) value);
              }
            },
            StateRequestHandler.unsupported(),
            BundleProgressHandler.ignored());
    @SuppressWarnings("unchecked")
    FnDataReceiver<WindowedValue<?>> receiver =
        (FnDataReceiver<WindowedValue<?>>) bundle.getInputReceivers().values().iterator().next();
    input = receiver;
  }

  @ProcessElement
  public void processElement(ProcessContext context, BoundedWindow window) throws Exception {
    input.accept(WindowedValue.of(context.element(), context.timestamp(), window, context.pane()));
  }

  @FinishBundle
  public void finishBundle(FinishBundleContext context) throws Exception {
    try {
      // Waits for the SDK worker to finish the bundle; a Python error fails it here.
      bundle.close();
    } finally {
      bundle = null;
      input = null;
    }
    WindowedValue<Row> output;
    while ((output = outputs.poll()) != null) {
      for (BoundedWindow window : output.getWindows()) {
        context.output(output.getValue(), output.getTimestamp(), window);
      }
    }
  }

  @Teardown
  public void teardown() throws Exception {
    if (stageBundleFactory != null) {
      stageBundleFactory.close();
      stageBundleFactory = null;
    }
  }

  private static void close(JobBundleFactory factory) {
    try {
      factory.close();
    } catch (Exception e) {
      // The JVM is exiting; the worker pool stops its workers when it stops.
    }
  }
}
