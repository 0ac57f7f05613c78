package dev.xinfer.runtime.portable;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.Elements;
import org.apache.beam.runners.fnexecution.data.GrpcDataService;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.fn.data.BeamFnDataOutboundAggregator;
import org.apache.beam.sdk.fn.data.FnDataReceiver;
import org.apache.beam.sdk.fn.stream.OutboundObserverFactory;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;
import org.junit.Test;

public class BundleInputsTest {
  /** The messages an SDK harness would get, in order. */
  private static final class Sent implements StreamObserver<Elements> {
    final List<Elements> messages = new CopyOnWriteArrayList<>();
    volatile boolean fail;

    @Override
    public void onNext(Elements elements) {
      if (fail) {
        throw new IllegalStateException("the data stream is gone");
      }
      messages.add(elements);
    }

    @Override
    public void onError(Throwable t) {}

    @Override
    public void onCompleted() {}

    /** The values sent for {@code transformId}, decoded, and whether its end came. */
    List<String> values(String transformId) throws IOException {
      List<String> values = new ArrayList<>();
      for (Elements message : messages) {
        for (Elements.Data data : message.getDataList()) {
          if (data.getTransformId().equals(transformId) && !data.getData().isEmpty()) {
            java.io.InputStream in = data.getData().newInput();
            while (in.available() > 0) {
              values.add(StringUtf8Coder.of().decode(in));
            }
          }
        }
      }
      return values;
    }

    boolean ended(String transformId) {
      return messages.stream()
          .flatMap(m -> m.getDataList().stream())
          .anyMatch(d -> d.getTransformId().equals(transformId) && d.getIsLast());
    }
  }

  private static PipelineOptions options(String... experiments) {
    List<String> args = new ArrayList<>();
    for (String experiment : experiments) {
      args.add("--experiments=" + experiment);
    }
    return PipelineOptionsFactory.fromArgs(args.toArray(new String[0])).create();
  }

  private static BundleInputs bundle(Sent sent, String id, PipelineOptions options) {
    return BundleInputs.of(
        id,
        new BeamFnDataOutboundAggregator(options, () -> id, sent, false),
        BundleInputs.Limits.of(options));
  }

  private static long threadsNamed(String prefix) {
    return Thread.getAllStackTraces().keySet().stream()
        .filter(t -> t.isAlive() && t.getName().startsWith(prefix))
        .count();
  }

  @Test
  public void limitsAreReadFromTheDataServicesOptions() throws Exception {
    GrpcDataService service =
        GrpcDataService.create(
            options("data_buffer_time_limit_ms=3", "data_buffer_size_limit=100"),
            Executors.newSingleThreadExecutor(),
            OutboundObserverFactory.serverDirect());
    BundleInputs.Limits limits = BundleInputs.Limits.of(service);
    assertEquals(3, limits.timeMillis);
    assertEquals(100, limits.sizeBytes);

    BundleInputs.Limits none =
        BundleInputs.Limits.of(
            GrpcDataService.create(
                options(),
                Executors.newSingleThreadExecutor(),
                OutboundObserverFactory.serverDirect()));
    assertFalse(none.timed());
    assertEquals(BeamFnDataOutboundAggregator.DEFAULT_BUFFER_LIMIT_BYTES, none.sizeBytes);
  }

  @Test
  public void aTimedBundlesInputsGoOutOnTimeAndTheirEndOnFinish() throws Exception {
    Sent sent = new Sent();
    BundleInputs inputs = bundle(sent, "b1", options("data_buffer_time_limit_ms=1"));
    FnDataReceiver<String> receiver = inputs.data("t", StringUtf8Coder.of());
    inputs.start();
    receiver.accept("a");
    receiver.accept("b");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while (sent.values("t").size() < 2 && System.nanoTime() < deadline) {
      Thread.sleep(1);
    }
    assertEquals("sent on time, before the bundle's end", List.of("a", "b"), sent.values("t"));
    assertFalse(sent.ended("t"));

    receiver.accept("c");
    inputs.finish();
    inputs.discard();
    assertEquals(List.of("a", "b", "c"), sent.values("t"));
    assertTrue(sent.ended("t"));
    Elements last = sent.messages.get(sent.messages.size() - 1);
    assertEquals("b1", last.getData(last.getDataCount() - 1).getInstructionId());
  }

  @Test
  public void beamsAggregatorLeavesAThreadPerBundleAndBundleInputsNone() throws Exception {
    PipelineOptions options = options("data_buffer_time_limit_ms=1");
    String beams = "DataBufferOutboundFlusher-thread";
    long before = threadsNamed(beams);
    for (int i = 0; i < 20; i++) {
      BeamFnDataOutboundAggregator aggregator =
          new BeamFnDataOutboundAggregator(options, () -> "x", new Sent(), false);
      FnDataReceiver<String> receiver =
          aggregator.registerOutputDataLocation("t", StringUtf8Coder.of());
      aggregator.start();
      receiver.accept("a");
      aggregator.sendOrCollectBufferedDataAndFinishOutboundStreams();
      aggregator.discard();
    }
    Thread.sleep(50);
    // When this fails, Beam stops its aggregator's thread: BundleInputs can go.
    assertEquals("Beam 2.62 leaves its flusher behind", before + 20, threadsNamed(beams));

    long beamsNow = threadsNamed(beams);
    Sent sent = new Sent();
    for (int i = 0; i < 200; i++) {
      BundleInputs inputs = bundle(sent, "b" + i, options);
      inputs.data("t", StringUtf8Coder.of()).accept("v" + i);
      inputs.start();
      inputs.finish();
      inputs.discard();
    }
    assertEquals(beamsNow, threadsNamed(beams));
    assertTrue(threadsNamed(BundleInputs.FLUSH_THREAD_NAME) <= BundleInputs.FLUSH_THREADS);
    assertEquals(200, sent.values("t").size());
  }

  @Test
  public void aFullBufferGoesAtOnce() throws Exception {
    Sent sent = new Sent();
    // A time limit no test waits for, and a 1-byte size limit.
    BundleInputs inputs =
        bundle(sent, "b", options("data_buffer_time_limit_ms=600000", "data_buffer_size_limit=1"));
    FnDataReceiver<String> receiver = inputs.data("t", StringUtf8Coder.of());
    inputs.start();
    receiver.accept("abc");
    assertEquals(List.of("abc"), sent.values("t"));
    inputs.discard();
  }

  @Test
  public void withoutATimeLimitBeamsAggregatorSendsAllAtTheEnd() throws Exception {
    Sent sent = new Sent();
    BundleInputs inputs = bundle(sent, "b", options());
    FnDataReceiver<String> receiver = inputs.data("t", StringUtf8Coder.of());
    inputs.start();
    receiver.accept("a");
    Thread.sleep(20);
    assertTrue(sent.messages.isEmpty());
    inputs.finish();
    assertEquals(1, sent.messages.size());
    assertEquals(List.of("a"), sent.values("t"));
    assertTrue(sent.ended("t"));
  }

  @Test
  public void aFailedFlushOnTimeFailsTheNextInputNamingTheBundle() throws Exception {
    Sent sent = new Sent();
    sent.fail = true;
    BundleInputs inputs = bundle(sent, "b7", options("data_buffer_time_limit_ms=1"));
    FnDataReceiver<String> receiver = inputs.data("t", StringUtf8Coder.of());
    inputs.start();
    receiver.accept("a");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    IOException failure = null;
    while (failure == null && System.nanoTime() < deadline) {
      Thread.sleep(1);
      try {
        receiver.accept("b");
      } catch (IOException e) {
        failure = e;
      }
    }
    assertTrue("no failure within 10 s", failure != null);
    assertTrue(failure.getMessage(), failure.getMessage().contains("bundle b7"));
    assertEquals("the data stream is gone", failure.getCause().getMessage());
    assertThrows(IOException.class, inputs::finish);
    inputs.discard();
  }
}
