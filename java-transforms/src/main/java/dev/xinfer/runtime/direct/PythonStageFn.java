package dev.xinfer.runtime.direct;

import dev.xinfer.runtime.BeamHooks;
import dev.xinfer.runtime.LoopbackFnServers;
import dev.xinfer.runtime.python.PythonServices;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.beam.model.fnexecution.v1.BeamFnApi;
import org.apache.beam.model.pipeline.v1.MetricsApi;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.core.metrics.DistributionData;
import org.apache.beam.runners.core.metrics.MetricUpdates;
import org.apache.beam.runners.core.metrics.MetricsContainerImpl;
import org.apache.beam.runners.fnexecution.control.BundleProgressHandler;
import org.apache.beam.runners.fnexecution.control.JobBundleFactory;
import org.apache.beam.runners.fnexecution.control.RemoteBundle;
import org.apache.beam.runners.fnexecution.control.StageBundleFactory;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.runners.fnexecution.state.StateRequestHandler;
import org.apache.beam.sdk.fn.data.FnDataReceiver;
import org.apache.beam.sdk.metrics.MetricName;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.util.WindowedValue;
import org.apache.beam.sdk.util.construction.graph.ExecutableStage;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.TupleTag;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Struct;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Runs a fused Python stage (xinfer's RunInference, expanded by the Python expansion service) from
 * inside a Java {@link DoFn}, the way the portable runners run executable stages: each bundle of
 * the DoFn is a bundle of the SDK worker, over the Fn API. This lets runners that cannot execute
 * external transforms, such as the DirectRunner, run the pipeline.
 */
final class PythonStageFn extends DoFn<Object, Object> {
  /**
   * One job bundle factory (and so one SDK worker) per Python environment (the worker pool and its
   * secret), shared by every stage of every pipeline this JVM runs: a JUnit class of TestPipelines
   * starts one SDK worker, not one per test (it had: about 2 s and a Python process kept for the
   * JVM's life each). The worker gets the first pipeline's options; xinfer's Python stages take
   * what they need from their own payload.
   */
  private static final Map<RunnerApi.Environment, JobBundleFactory> FACTORIES =
      new ConcurrentHashMap<>();

  private final String stageId;
  private final byte[] stagePayload;
  private final byte[] pipelineOptions;

  /** The output tag for each of the stage's output PCollections. */
  private final Map<String, String> tagByPCollectionId;

  private transient RunnerApi.@Nullable Environment environment;
  private transient @Nullable JobBundleFactory jobBundleFactory;
  private transient @Nullable StageBundleFactory stageBundleFactory;
  private transient @Nullable RemoteBundle bundle;
  private transient @Nullable FnDataReceiver<WindowedValue<?>> input;
  private transient ConcurrentLinkedQueue<KV<String, WindowedValue<?>>> outputs;
  private transient AtomicReference<BeamFnApi.@Nullable ProcessBundleResponse> response;
  private transient long bundleStartNanos;

  PythonStageFn(
      String stageId,
      ExecutableStage stage,
      Struct pipelineOptions,
      Map<String, String> tagByPCollectionId) {
    this.stageId = stageId;
    this.stagePayload = stage.toPTransform(stageId).getSpec().getPayload().toByteArray();
    this.pipelineOptions = pipelineOptions.toByteArray();
    this.tagByPCollectionId = new LinkedHashMap<>(tagByPCollectionId);
  }

  @Setup
  public void setup() throws Exception {
    ExecutableStage stage =
        ExecutableStage.fromPayload(RunnerApi.ExecutableStagePayload.parseFrom(stagePayload));
    Struct options = Struct.parseFrom(pipelineOptions);
    JobBundleFactory factory =
        FACTORIES.computeIfAbsent(
            stage.getEnvironment(),
            environment -> {
              // Kept for the JVM's life (the next pipeline reuses its SDK worker), so its
              // threads must not keep the JVM from exiting.
              JobBundleFactory created =
                  BeamHooks.withDaemonThreads(
                      LoopbackFnServers.jobBundleFactory(
                          JobInfo.create(stageId, stageId, "", options)));
              Runtime.getRuntime().addShutdownHook(new Thread(() -> close(created)));
              return created;
            });
    environment = stage.getEnvironment();
    jobBundleFactory = factory;
    stageBundleFactory = factory.forStage(stage);
  }

  @StartBundle
  public void startBundle() throws Exception {
    bundleStartNanos = System.nanoTime();
    ConcurrentLinkedQueue<KV<String, WindowedValue<?>>> received = new ConcurrentLinkedQueue<>();
    AtomicReference<BeamFnApi.@Nullable ProcessBundleResponse> completed = new AtomicReference<>();
    outputs = received;
    response = completed;
    bundle =
        stageBundleFactory.getBundle(
            new org.apache.beam.runners.fnexecution.control.OutputReceiverFactory() {
              @Override
              public <OutputT> FnDataReceiver<OutputT> create(String pCollectionId) {
                String tag = tagByPCollectionId.get(pCollectionId);
                if (tag == null) {
                  throw new IllegalStateException(
                      "The Python stage wrote to "
                          + pCollectionId
                          + ", which xinfer did not "
                          + "expect (outputs: "
                          + tagByPCollectionId
                          + ")");
                }
                return value -> received.add(KV.of(tag, (WindowedValue<?>) value));
              }
            },
            StateRequestHandler.unsupported(),
            new BundleProgressHandler() {
              @Override
              public void onProgress(BeamFnApi.ProcessBundleProgressResponse progress) {}

              @Override
              public void onCompleted(BeamFnApi.ProcessBundleResponse done) {
                completed.set(done);
              }
            });
    @SuppressWarnings("unchecked")
    FnDataReceiver<WindowedValue<?>> receiver =
        (FnDataReceiver<WindowedValue<?>>) bundle.getInputReceivers().values().iterator().next();
    input = receiver;
  }

  @ProcessElement
  public void processElement(ProcessContext context, BoundedWindow window) throws Exception {
    // Elements are Rows or KVs of String and Row, whatever the stage's input coder says.
    input.accept(WindowedValue.of(context.element(), context.timestamp(), window, context.pane()));
  }

  @FinishBundle
  public void finishBundle(FinishBundleContext context) throws Exception {
    long started = bundleStartNanos;
    try {
      // Waits for the SDK worker to finish the bundle; a Python error fails it here.
      bundle.close();
    } catch (Exception e) {
      if (!reportedByALiveWorker(e, PythonServices.noticesSince(started))) {
        // The shared SDK worker may be the cause (killed, out of memory): the next pipeline
        // starts a new one. This pipeline's other bundles keep theirs; it is closed when the JVM
        // exits.
        FACTORIES.remove(environment, jobBundleFactory);
      }
      String message = "The Python stage's bundle failed: " + e;
      String explained = PythonServices.withNotices(message, started, e);
      if (explained.equals(message)) {
        throw e;
      }
      throw new IllegalStateException(explained, e);
    } finally {
      bundle = null;
      input = null;
    }
    KV<String, WindowedValue<?>> output;
    while ((output = outputs.poll()) != null) {
      TupleTag<Object> tag = new TupleTag<>(output.getKey());
      WindowedValue<?> value = output.getValue();
      for (BoundedWindow window : value.getWindows()) {
        context.output(tag, value.getValue(), value.getTimestamp(), window);
      }
    }
    BeamFnApi.ProcessBundleResponse done = response.get();
    if (done != null) {
      reportMetrics(done.getMonitoringInfosList());
    }
  }

  /**
   * Whether a bundle's failure is a Python error that the SDK worker reported itself (Beam's "Error
   * received from SDK harness"), with no sign that the worker was lost (its connection cancelled or
   * closed, or its pool telling that it died): such a worker serves the next bundles as before
   * (Beam's Python harness drops the failed bundle's processor), so a test class whose one test
   * expects a Python error does not start a new worker for the next test.
   */
  static boolean reportedByALiveWorker(Throwable failure, List<String> notices) {
    if (PythonServices.looksLikeALostWorker(failure)
        || notices.stream().anyMatch(notice -> notice.contains(" died"))) {
      return false;
    }
    for (Throwable t = failure; t != null; t = t.getCause() == t ? null : t.getCause()) {
      if (String.valueOf(t.getMessage()).contains("Error received from SDK harness")) {
        return true;
      }
    }
    return false;
  }

  /**
   * Reports the Python stage's user metrics (RunInference's counters and distributions) as this
   * DoFn's, so {@code PipelineResult.metrics()} shows them as on the portable runners.
   */
  private static void reportMetrics(List<MetricsApi.MonitoringInfo> infos) {
    MetricsContainerImpl bundleMetrics = new MetricsContainerImpl(null);
    bundleMetrics.update(infos);
    MetricUpdates updates = bundleMetrics.getUpdates();
    for (MetricUpdates.MetricUpdate<Long> counter : updates.counterUpdates()) {
      MetricName name = counter.getKey().metricName();
      Metrics.counter(name.getNamespace(), name.getName()).inc(counter.getUpdate());
    }
    for (MetricUpdates.MetricUpdate<DistributionData> d : updates.distributionUpdates()) {
      MetricName name = d.getKey().metricName();
      DistributionData data = d.getUpdate();
      if (data.count() > 0) {
        Metrics.distribution(name.getNamespace(), name.getName())
            .update(data.sum(), data.count(), data.min(), data.max());
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
