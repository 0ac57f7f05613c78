package org.apache.beam.runners.fnexecution.control;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.ByteArrayOutputStream;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.fnexecution.v1.BeamFnApi;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.Elements;
import org.apache.beam.runners.flink.translation.wrappers.streaming.ExecutableStageDoFnOperator$TestQueueReceiver;
import org.apache.beam.runners.fnexecution.data.FnDataService;
import org.apache.beam.runners.fnexecution.data.RemoteInputDestination;
import org.apache.beam.runners.fnexecution.state.StateRequestHandler;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.fn.data.BeamFnDataOutboundAggregator;
import org.apache.beam.sdk.fn.data.CloseableFnDataReceiver;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.ByteString;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;
import org.junit.After;
import org.junit.Test;

/**
 * xinfer's copy of Beam's SdkHarnessClient, against fakes of the control and data services: a
 * streaming Flink bundle's outputs reach their receivers while the bundle runs, however many
 * messages the harness sends; other receivers get them when the bundle closes, as in Beam.
 */
public class SdkHarnessClientTest {
  /** Beam's inbound queue holds 100 messages; a harness that flushes more used to stall. */
  private static final int MESSAGES = 150;

  private final ExecutorService harness = Executors.newSingleThreadExecutor();
  private final CompletableFuture<BeamFnApi.InstructionResponse> response =
      new CompletableFuture<>();
  private final LinkedBlockingQueue<CloseableFnDataReceiver<Elements>> inbound =
      new LinkedBlockingQueue<>();

  @After
  public void stopHarness() {
    harness.shutdownNow();
  }

  private SdkHarnessClient.BundleProcessor.ActiveBundle newBundle(
      org.apache.beam.sdk.fn.data.FnDataReceiver<String> receiver) {
    InstructionRequestHandler control =
        new InstructionRequestHandler() {
          @Override
          public void registerProcessBundleDescriptor(BeamFnApi.ProcessBundleDescriptor d) {}

          @Override
          public CompletionStage<BeamFnApi.InstructionResponse> handle(
              BeamFnApi.InstructionRequest request) {
            return response;
          }

          @Override
          public void close() {}
        };
    FnDataService data =
        new FnDataService() {
          @Override
          public void registerReceiver(
              String instructionId, CloseableFnDataReceiver<Elements> observer) {
            inbound.add(observer);
          }

          @Override
          public void unregisterReceiver(String instructionId) {}

          @Override
          public BeamFnDataOutboundAggregator createOutboundAggregator(
              Supplier<String> bundleId, boolean collectElementsIfNoFlushes) {
            return new BeamFnDataOutboundAggregator(
                PipelineOptionsFactory.create(),
                bundleId,
                new StreamObserver<Elements>() {
                  @Override
                  public void onNext(Elements value) {}

                  @Override
                  public void onError(Throwable t) {}

                  @Override
                  public void onCompleted() {}
                },
                collectElementsIfNoFlushes);
          }
        };
    SdkHarnessClient.BundleProcessor processor =
        SdkHarnessClient.usingFnApiClient(control, data)
            .getProcessor(
                BeamFnApi.ProcessBundleDescriptor.newBuilder().setId("stage").build(),
                List.of(RemoteInputDestination.of(StringUtf8Coder.of(), "in")));
    return processor.newBundle(
        Map.of("out", RemoteOutputReceiver.of(StringUtf8Coder.of(), receiver)),
        StateRequestHandler.unsupported(),
        BundleProgressHandler.ignored());
  }

  /** The harness's side: {@code count} messages of one output each, then the stream's end. */
  private Future<?> harnessSends(String bundleId, int count) throws Exception {
    CloseableFnDataReceiver<Elements> observer = inbound.poll(10, TimeUnit.SECONDS);
    return harness.submit(
        () -> {
          for (int i = 0; i < count; i++) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            StringUtf8Coder.of().encode("output-" + i, bytes);
            observer.accept(message(bundleId, ByteString.copyFrom(bytes.toByteArray()), false));
          }
          observer.accept(message(bundleId, ByteString.EMPTY, true));
          return null;
        });
  }

  private static Elements message(String bundleId, ByteString data, boolean isLast) {
    return Elements.newBuilder()
        .addData(
            Elements.Data.newBuilder()
                .setInstructionId(bundleId)
                .setTransformId("out")
                .setData(data)
                .setIsLast(isLast))
        .build();
  }

  @Test
  public void aStreamingBundlesOutputsArriveWhileItRunsHoweverManyMessagesTheyTake()
      throws Exception {
    ExecutableStageDoFnOperator$TestQueueReceiver receiver =
        new ExecutableStageDoFnOperator$TestQueueReceiver();
    SdkHarnessClient.BundleProcessor.ActiveBundle bundle = newBundle(receiver);
    Future<?> sent = harnessSends(bundle.getId(), MESSAGES);
    // All of it arrives before the harness has answered the bundle.
    sent.get(30, TimeUnit.SECONDS);
    for (int i = 0; i < MESSAGES; i++) {
      assertEquals("output-" + i, receiver.received.poll(10, TimeUnit.SECONDS));
    }
    response.complete(BeamFnApi.InstructionResponse.getDefaultInstance());
    bundle.close();
    assertTrue(receiver.received.isEmpty());
  }

  @Test
  public void otherReceiversGetTheOutputsWhenTheBundleCloses() throws Exception {
    LinkedBlockingQueue<String> received = new LinkedBlockingQueue<>();
    org.apache.beam.sdk.fn.data.FnDataReceiver<String> plain = received::put;
    SdkHarnessClient.BundleProcessor.ActiveBundle bundle = newBundle(plain);
    Future<?> sent = harnessSends(bundle.getId(), 5);
    sent.get(30, TimeUnit.SECONDS);
    Thread.sleep(200);
    assertTrue("outputs reached a receiver Beam calls only in close()", received.isEmpty());
    assertFalse(SdkHarnessClient.takesOutputsFromAnyThread(plain));
    response.complete(BeamFnApi.InstructionResponse.getDefaultInstance());
    bundle.close();
    assertEquals(5, received.size());
  }
}
