package dev.xinfer.runtime;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory;
import org.apache.beam.runners.fnexecution.control.ExecutableStageContext;
import org.apache.beam.runners.fnexecution.control.JobBundleFactory;
import org.apache.beam.runners.fnexecution.control.SdkHarnessClient;
import org.apache.beam.sdk.PipelineRunner;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannel;

/**
 * Where xinfer's Java side reaches into Beam internals: the one class to read on a Beam upgrade
 * (CONTRIBUTING.md, "Upgrading Beam"). xinfer is built and checked for Beam {@value #BEAM_VERSION}
 * (the one place Java code names it); what comments elsewhere say of Beam's behaviour was read in
 * that version's sources.
 *
 * <ul>
 *   <li>{@link #jobFactories}: the static {@code jobFactories} map of the Flink and Spark runners'
 *       {@code ExecutableStageContextFactory}, where {@link LoopbackFnServers} registers a job's
 *       stage-context factory so that its Fn API servers bind to 127.0.0.1 (Beam's default binds
 *       all interfaces and the runners take no other).
 *   <li>{@link TeardownNoise}: the reports Beam's embedded Java harness prints at the end of every
 *       job, recognized by their text.
 *   <li>Vendored gRPC ({@code org.apache.beam.vendor.grpc.v1p60p1}), whose version is in the
 *       package name: {@code LoopbackServerFactory}, {@code PythonExpansion}, {@code
 *       PythonStageFn}, {@code CombineLifting}, {@code TeardownNoise} (a logger name) and the
 *       {@code simplelogger.properties} of both modules.
 *   <li>{@link LoopbackFnServers.Runner}: the Flink and Spark stage-context factories by class name
 *       (a TaskManager or executor may lack one runner's classes).
 *   <li>{@link #classicRunner}: the classic runner classes that Beam's IOs recognize by name when
 *       {@code Pipeline.run()} validates the pipeline (KafkaIO's exactly-once sink accepts only
 *       runners in {@code org.apache.beam.runners.flink.}, {@code .spark.}, {@code .dataflow.} or
 *       the DirectRunner), which {@code XinferRunner} names while Beam validates.
 *   <li>Spark's {@code DStreamGraph.inputStreams} (a private field, Spark 3.2), from which {@code
 *       SparkStreamingRunner} takes the queue streams Beam's translator leaves behind each read, so
 *       that a streaming job can be restored from its checkpoint.
 *   <li>{@link #shutdownChannel}: vendored gRPC's {@code ManagedChannelImpl$RealChannel.this$0},
 *       {@code ManagedChannelOrphanWrapper.refs} and {@code ForwardingManagedChannel.delegate},
 *       through which {@link EmbeddedEnvironments} shuts down the channels of Beam's embedded Java
 *       harness (which never does, and so keeps a job's class loader for the JVM's life).
 *   <li>{@link #forgetRequests}: {@code FnApiControlClient.outstandingRequests}, from which {@link
 *       EmbeddedEnvironments} drops the readiness requests whose answer Beam's harness dropped.
 *   <li>{@link #withDaemonThreads}: the thread pool of a {@code DefaultJobBundleFactory}, whose
 *       threads would keep a DirectRunner JVM alive for a minute after its last pipeline.
 *   <li>{@code GrpcDataService.options} (private), from which {@link
 *       dev.xinfer.runtime.portable.BundleInputs} reads the time limit of a bundle's inputs.
 *   <li>Workarounds of Beam's Fn API servers, each with a test that fails once Beam no longer needs
 *       it: {@link CancelledCallsUnblock} (a writer waits forever on a stream whose peer died) and
 *       {@link CloseOnce} ({@code GrpcStateService} closes a state stream a second time at a job's
 *       end).
 *   <li>{@link #PATCHED_CLASSES}: Beam classes xinfer ships a corrected copy of, which must come
 *       before Beam's on the classpath: {@code BufferingDoFnRunner} (Flink's buffer for
 *       {@code @RequiresStableInput}), whose Beam version deadlocks a portable job at its first
 *       checkpoint when the buffered DoFn reads state, as KafkaIO's exactly-once writer does;
 *       {@code ReaderInvocationUtil} (how Flink's sources call a Beam reader), whose Beam version
 *       pushes the reader's metrics to Flink after every record, 11% of a streaming job's CPU;
 *       {@code SdkHarnessClient} (the runner's end of a bundle), whose Beam version takes a
 *       bundle's outputs off the data plane only once the bundle has ended, so that no output of a
 *       streaming stage reaches Flink before its bundle's end; {@code UnboundedSourceWrapper} (the
 *       portable runner's Flink source), whose Beam version sleeps 50 ms when its readers have no
 *       record and lets KafkaIO's reader wait for records holding the checkpoint lock.
 *   <li>{@code KafkaUnboundedReader.recordsDequeuePollTimeout} (private), which {@link
 *       dev.xinfer.runtime.flink.KafkaReaderWait} sets to zero so that KafkaIO's reader does not
 *       wait for records holding Flink's checkpoint lock (checked where KafkaIO is on the
 *       classpath).
 * </ul>
 *
 * <p>{@link #problems()} lists the hooks whose target is gone; {@code BeamHooksTest} fails on any,
 * so an upgrade that breaks one fails there, by name, before any pipeline runs.
 */
@Internal
public final class BeamHooks {
  /** The Beam version the hooks were written and checked for (the root pom's beam.version). */
  public static final String BEAM_VERSION = "2.62.0";

  /** The classic runner of each engine xinfer runs through Beam's portable runner. */
  static final Map<String, String> CLASSIC_RUNNERS =
      Map.of(
          "FlinkRunner", "org.apache.beam.runners.flink.FlinkRunner",
          "SparkRunner", "org.apache.beam.runners.spark.SparkRunner");

  /** Beam classes of which xinfer ships a corrected copy (in this jar, the same package). */
  static final List<String> PATCHED_CLASSES =
      List.of(
          "org.apache.beam.runners.flink.translation.wrappers.streaming.stableinput"
              + ".BufferingDoFnRunner",
          "org.apache.beam.runners.flink.metrics.ReaderInvocationUtil",
          "org.apache.beam.runners.fnexecution.control.SdkHarnessClient",
          "org.apache.beam.runners.flink.translation.wrappers.streaming.ExecutableStageDoFnOperator",
          "org.apache.beam.runners.flink.translation.wrappers.streaming.io.UnboundedSourceWrapper");

  private BeamHooks() {}

  /**
   * The classic runner class for {@code runnerName} ({@code FlinkRunner}, {@code SparkRunner}), for
   * the options while Beam validates a pipeline that {@code XinferRunner} then runs.
   */
  @SuppressWarnings("unchecked")
  public static Class<? extends PipelineRunner<?>> classicRunner(String runnerName) {
    String name = CLASSIC_RUNNERS.get(runnerName);
    if (name == null) {
      throw new IllegalArgumentException("no classic runner known for " + runnerName);
    }
    try {
      return (Class<? extends PipelineRunner<?>>)
          Class.forName(name, false, BeamHooks.class.getClassLoader());
    } catch (ClassNotFoundException e) {
      throw new IllegalStateException(
          runnerName + "'s classes (" + name + ") are not on the classpath; add Beam's runner", e);
    }
  }

  /** The static map of a runner's stage-context factories by job id. */
  @SuppressWarnings("unchecked")
  static ConcurrentMap<String, ExecutableStageContext.Factory> jobFactories(Class<?> factoryClass) {
    try {
      Field field = factoryClass.getDeclaredField("jobFactories");
      field.setAccessible(true);
      return (ConcurrentMap<String, ExecutableStageContext.Factory>) field.get(null);
    } catch (ReflectiveOperationException | ClassCastException e) {
      throw new IllegalStateException(
          "xinfer cannot reach "
              + factoryClass.getSimpleName()
              + ".jobFactories; this xinfer version is built for Beam "
              + BEAM_VERSION
              + "'s runners.",
          e);
    }
  }

  private static boolean loadable(String className) {
    try {
      Class.forName(className, false, BeamHooks.class.getClassLoader());
      return true;
    } catch (ClassNotFoundException e) {
      return false;
    }
  }

  /**
   * Makes the threads of {@code factory} (a {@code DefaultJobBundleFactory}) daemon threads and
   * returns it. Beam gives its Fn API servers a cached pool of non-daemon threads, which live 60 s
   * after their last task: a JVM that keeps a factory across pipelines (the DirectRunner's stages)
   * could not exit for about a minute after its last pipeline, and its shutdown hooks, which close
   * the factories and their SDK workers, waited for those threads.
   */
  public static JobBundleFactory withDaemonThreads(JobBundleFactory factory) {
    try {
      Field field = DefaultJobBundleFactory.class.getDeclaredField("executor");
      field.setAccessible(true);
      ExecutorService beams = (ExecutorService) field.get(factory);
      field.set(
          factory,
          Executors.newCachedThreadPool(
              runnable -> {
                Thread thread = Executors.defaultThreadFactory().newThread(runnable);
                thread.setName("xinfer-fn-" + thread.getName());
                thread.setDaemon(true);
                return thread;
              }));
      beams.shutdown();
      return factory;
    } catch (ReflectiveOperationException | ClassCastException e) {
      throw new IllegalStateException(
          "xinfer cannot reach DefaultJobBundleFactory.executor; this xinfer version is built for "
              + "Beam "
              + BEAM_VERSION
              + ".",
          e);
    }
  }

  private static final String GRPC = "org.apache.beam.vendor.grpc.v1p60p1.io.grpc.";

  /** The private fields {@link #shutdownChannel} reads, by class (vendored gRPC 1.60.1). */
  static final Map<String, String> CHANNEL_FIELDS =
      Map.of(
          GRPC + "internal.ManagedChannelImpl$RealChannel", "this$0",
          GRPC + "internal.ManagedChannelOrphanWrapper", "refs",
          GRPC + "internal.ForwardingManagedChannel", "delegate");

  /**
   * Shuts down the managed channel that {@code channel} belongs to: no new calls, and the channel
   * ends once its calls have (a stream still open ends when its server shuts down; cancelling it
   * instead raced the server's own close and printed "call already closed"). {@code channel} is
   * what a channel's first client interceptor sees as the next channel, gRPC's {@code RealChannel}
   * inside a {@code ManagedChannelImpl}. The channel is shut through the orphan wrapper that its
   * builder returned, as its owner would, so that gRPC does not report it as garbage collected
   * without shutdown. Returns false, doing nothing, when {@code channel} is none of these.
   */
  static boolean shutdownChannel(org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Channel channel) {
    try {
      ManagedChannel managed;
      if (channel instanceof ManagedChannel) {
        managed = (ManagedChannel) channel;
      } else if (channel
          .getClass()
          .getName()
          .equals(GRPC + "internal.ManagedChannelImpl$RealChannel")) {
        managed = (ManagedChannel) field(channel.getClass(), "this$0").get(channel);
      } else {
        return false;
      }
      ManagedChannel owner = managed;
      Class<?> wrapper =
          Class.forName(
              GRPC + "internal.ManagedChannelOrphanWrapper",
              false,
              managed.getClass().getClassLoader());
      Field delegate = field(wrapper.getSuperclass(), "delegate");
      for (Object reference : ((Map<?, ?>) field(wrapper, "refs").get(null)).keySet()) {
        Object wrapping = ((java.lang.ref.Reference<?>) reference).get();
        if (wrapping != null && delegate.get(wrapping) == managed) {
          owner = (ManagedChannel) wrapping;
          break;
        }
      }
      owner.shutdown();
      return true;
    } catch (ReflectiveOperationException | ClassCastException e) {
      throw new IllegalStateException(
          "xinfer cannot reach vendored gRPC's channel internals to shut the embedded Java"
              + " harness's channels; this xinfer version is built for Beam "
              + BEAM_VERSION
              + ".",
          e);
    }
  }

  /**
   * Drops the requests {@code ids} from what {@code handler} (Beam's {@code FnApiControlClient})
   * waits an answer for: requests whose answer the harness dropped ({@link EmbeddedEnvironments}),
   * which Beam would otherwise report as an error, and fail, when the environment closes.
   */
  static void forgetRequests(
      org.apache.beam.runners.fnexecution.control.InstructionRequestHandler handler,
      java.util.Collection<String> ids) {
    if (ids.isEmpty()
        || !(handler instanceof org.apache.beam.runners.fnexecution.control.FnApiControlClient)) {
      return;
    }
    try {
      Map<?, ?> outstanding =
          (Map<?, ?>)
              field(
                      org.apache.beam.runners.fnexecution.control.FnApiControlClient.class,
                      "outstandingRequests")
                  .get(handler);
      ids.forEach(outstanding::remove);
    } catch (ReflectiveOperationException | ClassCastException e) {
      throw new IllegalStateException(
          "xinfer cannot reach FnApiControlClient.outstandingRequests; this xinfer version is built"
              + " for Beam "
              + BEAM_VERSION
              + ".",
          e);
    }
  }

  private static Field field(Class<?> type, String name) throws NoSuchFieldException {
    Field field = type.getDeclaredField(name);
    field.setAccessible(true);
    return field;
  }

  /** What no longer matches in the Beam on the classpath, one line per hook. */
  public static List<String> problems() {
    List<String> found = new ArrayList<>();
    String version = org.apache.beam.sdk.util.ReleaseInfo.getReleaseInfo().getVersion();
    if (!BEAM_VERSION.equals(version)) {
      found.add("Beam is " + version + "; the hooks were checked for " + BEAM_VERSION);
    }
    for (LoopbackFnServers.Runner runner : LoopbackFnServers.Runner.values()) {
      if (!runner.isIn(BeamHooks.class.getClassLoader())) {
        found.add(
            "LoopbackFnServers.Runner."
                + runner
                + " names a stage-context factory or parent class that is gone");
        continue;
      }
      try {
        jobFactories(runner.factory(BeamHooks.class.getClassLoader()));
      } catch (IllegalStateException e) {
        found.add(e.getMessage() + " (" + e.getCause() + ")");
      }
    }
    try {
      Field executor = DefaultJobBundleFactory.class.getDeclaredField("executor");
      if (!ExecutorService.class.isAssignableFrom(executor.getType())) {
        found.add("DefaultJobBundleFactory.executor is no longer an ExecutorService");
      }
    } catch (NoSuchFieldException e) {
      found.add("DefaultJobBundleFactory has no executor field (withDaemonThreads)");
    }
    try {
      if (!org.apache.beam.sdk.options.PipelineOptions.class.isAssignableFrom(
          org.apache.beam.runners.fnexecution.data.GrpcDataService.class
              .getDeclaredField(dev.xinfer.runtime.portable.BundleInputs.Limits.OPTIONS_FIELD)
              .getType())) {
        found.add("GrpcDataService.options is no longer PipelineOptions (BundleInputs)");
      }
    } catch (NoSuchFieldException e) {
      found.add(
          "GrpcDataService has no options field: BundleInputs cannot read the inputs' time limit,"
              + " and Beam's aggregator flushes them again, leaving a thread behind per bundle");
    }
    try {
      if (!Map.class.isAssignableFrom(
          org.apache.beam.runners.fnexecution.control.FnApiControlClient.class
              .getDeclaredField("outstandingRequests")
              .getType())) {
        found.add("FnApiControlClient.outstandingRequests is no longer a Map (forgetRequests)");
      }
    } catch (NoSuchFieldException e) {
      found.add("FnApiControlClient has no outstandingRequests field (forgetRequests)");
    }
    String kafka =
        dev.xinfer.runtime.flink.KafkaReaderWait.problem(BeamHooks.class.getClassLoader());
    if (kafka != null) {
      found.add(kafka);
    }
    for (Map.Entry<String, String> hook : CHANNEL_FIELDS.entrySet()) {
      try {
        Class.forName(hook.getKey(), false, BeamHooks.class.getClassLoader())
            .getDeclaredField(hook.getValue());
      } catch (ClassNotFoundException | NoSuchFieldException e) {
        found.add(
            hook.getKey()
                + "."
                + hook.getValue()
                + " is gone: the embedded harness's channels can no longer be shut down");
      }
    }
    try {
      // By name: a Flink TaskManager has no Spark classes.
      Class<?> graph =
          Class.forName(
              "org.apache.spark.streaming.DStreamGraph", false, BeamHooks.class.getClassLoader());
      if (!graph
          .getDeclaredField("inputStreams")
          .getType()
          .getName()
          .equals("scala.collection.mutable.ArraySeq")) {
        found.add("Spark's DStreamGraph.inputStreams is no longer a mutable.ArraySeq");
      }
    } catch (ClassNotFoundException e) {
      // No Spark here: nothing to check.
    } catch (NoSuchFieldException e) {
      found.add("Spark's DStreamGraph has no inputStreams field (SparkStreamingRunner)");
    }
    String operator = SdkHarnessClient.FLINK_STREAMING_OPERATOR;
    if (loadable(CLASSIC_RUNNERS.get("FlinkRunner")) && !loadable(operator)) {
      found.add(
          operator
              + " is gone: xinfer's SdkHarnessClient no longer recognizes Flink's streaming"
              + " receivers, so streaming outputs wait for their bundle's end again");
    }
    for (String runner : CLASSIC_RUNNERS.keySet()) {
      try {
        classicRunner(runner);
      } catch (IllegalStateException e) {
        found.add(e.getMessage());
      }
    }
    Object ours = BeamHooks.class.getProtectionDomain().getCodeSource().getLocation();
    for (String name : PATCHED_CLASSES) {
      try {
        Class<?> loaded = Class.forName(name, false, BeamHooks.class.getClassLoader());
        Object where = loaded.getProtectionDomain().getCodeSource().getLocation();
        if (!ours.equals(where)) {
          found.add(
              name
                  + " is loaded from "
                  + where
                  + ", not from xinfer ("
                  + ours
                  + "): put xinfer-java-transforms before Beam's runner jars on the classpath");
        }
      } catch (ClassNotFoundException e) {
        found.add(name + " is gone from Beam: drop xinfer's copy");
      }
    }
    for (String name : TeardownNoise.SOURCES) {
      try {
        Class.forName(name, false, BeamHooks.class.getClassLoader());
      } catch (ClassNotFoundException e) {
        found.add(
            name + " is gone: TeardownNoise filters reports of a class that no longer exists");
      }
    }
    return found;
  }
}
