package dev.xinfer.runtime.portable;

import java.io.IOException;
import java.lang.reflect.Field;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.Elements;
import org.apache.beam.runners.fnexecution.data.FnDataService;
import org.apache.beam.runners.fnexecution.data.GrpcDataService;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.fn.data.BeamFnDataOutboundAggregator;
import org.apache.beam.sdk.fn.data.FnDataReceiver;
import org.apache.beam.sdk.options.ExperimentalOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.ByteStringOutputStream;
import org.apache.beam.sdk.values.KV;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * One bundle's data and timers on their way from the runner to an SDK harness (used by xinfer's
 * copy of Beam's {@code SdkHarnessClient}): Beam's {@link BeamFnDataOutboundAggregator}, except
 * that when the data has a time limit (Beam's {@code data_buffer_time_limit_ms} experiment, which
 * xinfer sets for streaming jobs) the periodic flushes run on {@value #FLUSH_THREADS} threads
 * shared by every bundle in the JVM.
 *
 * <p>Beam 2.62's aggregator starts a thread of its own in {@code start()}, and its {@code
 * discard()} only cancels the thread's task: the thread stays, idle, for the life of the JVM. The
 * runner makes an aggregator for every bundle, so a streaming job left a thread behind per bundle
 * and stage: 20 a second with two stages and 100 ms bundles, ~70,000 an hour, each a stack the
 * garbage collector scans, until the JVM runs out of threads or memory. Without a time limit
 * (batch), this hands everything to Beam's aggregator, which then starts no thread.
 */
@Internal
public final class BundleInputs {
  /** Threads that flush bundles' inputs on time, for the whole JVM. */
  static final int FLUSH_THREADS = 2;

  /** The name of those threads, followed by a number. */
  static final String FLUSH_THREAD_NAME = "xinfer-fn-data-flusher-";

  private static final ScheduledThreadPoolExecutor FLUSHERS = flushers();

  private final String bundleId;
  private final BeamFnDataOutboundAggregator aggregator;
  private final Limits limits;
  private final Object lock = new Object();
  private final Map<String, Buffer<?>> data = new LinkedHashMap<>();
  private final Map<KV<String, String>, Buffer<?>> timers = new LinkedHashMap<>();
  private long bytesSinceFlush;
  private boolean finished;
  private @Nullable ScheduledFuture<?> flushes;
  private volatile @Nullable Throwable flushFailure;

  private BundleInputs(String bundleId, BeamFnDataOutboundAggregator aggregator, Limits limits) {
    this.bundleId = bundleId;
    this.aggregator = aggregator;
    this.limits = limits;
  }

  /**
   * The inputs of bundle {@code bundleId}, sent through {@code aggregator} (made for that bundle by
   * the data service the {@code limits} were read from).
   */
  public static BundleInputs of(
      String bundleId, BeamFnDataOutboundAggregator aggregator, Limits limits) {
    return new BundleInputs(bundleId, aggregator, limits);
  }

  /** The receiver of the bundle's data for transform {@code transformId}. */
  public <T> FnDataReceiver<T> data(String transformId, Coder<T> coder) {
    if (!limits.timed()) {
      return aggregator.registerOutputDataLocation(transformId, coder);
    }
    return register(data, transformId, coder);
  }

  /** The receiver of the bundle's timers of {@code timerFamilyId} for {@code transformId}. */
  public <T> FnDataReceiver<T> timers(String transformId, String timerFamilyId, Coder<T> coder) {
    if (!limits.timed()) {
      return aggregator.registerOutputTimersLocation(transformId, timerFamilyId, coder);
    }
    return register(timers, KV.of(transformId, timerFamilyId), coder);
  }

  private <K, T> FnDataReceiver<T> register(
      Map<K, Buffer<?>> endpoints, K endpoint, Coder<T> coder) {
    Buffer<T> buffer = new Buffer<>(coder);
    synchronized (lock) {
      if (endpoints.put(endpoint, buffer) != null) {
        throw new IllegalStateException("Outbound endpoint already registered for " + endpoint);
      }
    }
    return buffer;
  }

  /** Starts flushing every {@code data_buffer_time_limit_ms}, when there is such a limit. */
  public void start() {
    if (!limits.timed()) {
      aggregator.start();
      return;
    }
    flushes =
        FLUSHERS.scheduleAtFixedRate(
            this::flushOnTime, limits.timeMillis, limits.timeMillis, TimeUnit.MILLISECONDS);
  }

  /**
   * Sends what is buffered and the end of each endpoint's stream: the bundle's inputs are all in.
   */
  public void finish() throws IOException {
    if (!limits.timed()) {
      aggregator.sendOrCollectBufferedDataAndFinishOutboundStreams();
      return;
    }
    stopFlushes();
    checkFlushes();
    synchronized (lock) {
      finished = true;
      if (data.isEmpty() && timers.isEmpty()) {
        return;
      }
      Elements.Builder elements = buffered();
      for (String transformId : data.keySet()) {
        elements
            .addDataBuilder()
            .setInstructionId(bundleId)
            .setTransformId(transformId)
            .setIsLast(true);
      }
      for (KV<String, String> timer : timers.keySet()) {
        elements
            .addTimersBuilder()
            .setInstructionId(bundleId)
            .setTransformId(timer.getKey())
            .setTimerFamilyId(timer.getValue())
            .setIsLast(true);
      }
      aggregator.sendElements(elements.build());
    }
  }

  /** Stops the flushes; what is buffered is dropped with the bundle. */
  public void discard() {
    if (!limits.timed()) {
      aggregator.discard();
      return;
    }
    stopFlushes();
    synchronized (lock) {
      finished = true;
    }
  }

  private void stopFlushes() {
    ScheduledFuture<?> scheduled = flushes;
    if (scheduled != null) {
      scheduled.cancel(false);
    }
  }

  private void flushOnTime() {
    try {
      synchronized (lock) {
        if (!finished) {
          flushLocked();
        }
      }
    } catch (RuntimeException | Error e) {
      flushFailure = e;
      throw e; // ends the periodic task
    }
  }

  private void checkFlushes() throws IOException {
    Throwable failure = flushFailure;
    if (failure != null) {
      throw new IOException(
          "sending bundle " + bundleId + "'s data to the SDK harness on time failed", failure);
    }
  }

  /** Sends what is buffered; the caller holds the lock. */
  private void flushLocked() {
    if (bytesSinceFlush == 0) {
      return;
    }
    Elements.Builder elements = buffered();
    if (elements.getDataCount() > 0 || elements.getTimersCount() > 0) {
      aggregator.sendElements(elements.build());
    }
  }

  /** What is buffered, taken from the buffers; the caller holds the lock. */
  private Elements.Builder buffered() {
    Elements.Builder elements = Elements.newBuilder();
    for (Map.Entry<String, Buffer<?>> entry : data.entrySet()) {
      if (entry.getValue().out.size() > 0) {
        elements
            .addDataBuilder()
            .setInstructionId(bundleId)
            .setTransformId(entry.getKey())
            .setData(entry.getValue().out.toByteStringAndReset());
      }
    }
    for (Map.Entry<KV<String, String>, Buffer<?>> entry : timers.entrySet()) {
      if (entry.getValue().out.size() > 0) {
        elements
            .addTimersBuilder()
            .setInstructionId(bundleId)
            .setTransformId(entry.getKey().getKey())
            .setTimerFamilyId(entry.getKey().getValue())
            .setTimers(entry.getValue().out.toByteStringAndReset());
      }
    }
    bytesSinceFlush = 0;
    return elements;
  }

  /** One endpoint's encoded values since the last flush. */
  private final class Buffer<T> implements FnDataReceiver<T> {
    private final Coder<T> coder;
    private final ByteStringOutputStream out = new ByteStringOutputStream();

    Buffer(Coder<T> coder) {
      this.coder = coder;
    }

    @Override
    public void accept(T value) throws Exception {
      checkFlushes();
      synchronized (lock) {
        int before = out.size();
        coder.encode(value, out);
        if (out.size() == before) {
          out.write(0); // as Beam: a value that encodes to nothing still takes a byte
        }
        bytesSinceFlush += out.size() - before;
        if (bytesSinceFlush > limits.sizeBytes) {
          flushLocked();
        }
      }
    }
  }

  private static ScheduledThreadPoolExecutor flushers() {
    AtomicInteger made = new AtomicInteger();
    ScheduledThreadPoolExecutor executor =
        new ScheduledThreadPoolExecutor(
            FLUSH_THREADS,
            runnable -> {
              Thread thread = new Thread(runnable, FLUSH_THREAD_NAME + made.incrementAndGet());
              thread.setDaemon(true);
              return thread;
            });
    executor.setRemoveOnCancelPolicy(true);
    return executor;
  }

  /**
   * A data service's limits on what a bundle's inputs buffer: Beam's {@code
   * data_buffer_size_limit=} (bytes, 1 MB by default) and {@code data_buffer_time_limit_ms=} (none
   * by default) experiments, from the pipeline options the service was made with.
   */
  public static final class Limits {
    /**
     * The private field of Beam's {@link GrpcDataService} that holds its pipeline options ({@code
     * BeamHooks.problems()} checks it).
     */
    public static final String OPTIONS_FIELD = "options";

    final long timeMillis;
    final int sizeBytes;

    Limits(long timeMillis, int sizeBytes) {
      this.timeMillis = timeMillis;
      this.sizeBytes = sizeBytes;
    }

    boolean timed() {
      return timeMillis > 0;
    }

    /**
     * The limits of {@code service}'s options; without a time limit (Beam's aggregator does it all)
     * when the service is not Beam's {@link GrpcDataService} or its options cannot be read.
     */
    public static Limits of(FnDataService service) {
      @Nullable PipelineOptions options = optionsOf(service);
      return options == null ? new Limits(-1, Integer.MAX_VALUE) : of(options);
    }

    static Limits of(PipelineOptions options) {
      // The first of each, as Beam's aggregator reads them.
      @Nullable Long time = null;
      @Nullable Integer size = null;
      List<String> experiments = options.as(ExperimentalOptions.class).getExperiments();
      for (String experiment :
          experiments == null ? Collections.<String>emptyList() : experiments) {
        if (time == null
            && experiment.startsWith(BeamFnDataOutboundAggregator.DATA_BUFFER_TIME_LIMIT_MS)) {
          time =
              Long.parseLong(
                  experiment.substring(
                      BeamFnDataOutboundAggregator.DATA_BUFFER_TIME_LIMIT_MS.length()));
        } else if (size == null
            && experiment.startsWith(BeamFnDataOutboundAggregator.DATA_BUFFER_SIZE_LIMIT)) {
          size =
              Integer.parseInt(
                  experiment.substring(
                      BeamFnDataOutboundAggregator.DATA_BUFFER_SIZE_LIMIT.length()));
        }
      }
      return new Limits(
          time == null ? BeamFnDataOutboundAggregator.DEFAULT_BUFFER_LIMIT_TIME_MS : time,
          size == null ? BeamFnDataOutboundAggregator.DEFAULT_BUFFER_LIMIT_BYTES : size);
    }

    static @Nullable PipelineOptions optionsOf(FnDataService service) {
      if (!(service instanceof GrpcDataService)) {
        return null;
      }
      try {
        Field field = GrpcDataService.class.getDeclaredField(OPTIONS_FIELD);
        field.setAccessible(true);
        return (PipelineOptions) field.get(service);
      } catch (ReflectiveOperationException | RuntimeException e) {
        return null; // BeamHooks.problems() names the missing field
      }
    }
  }
}
