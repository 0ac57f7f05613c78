package dev.xinfer.runtime;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.fnexecution.v1.BeamFnApi;
import org.apache.beam.model.fnexecution.v1.BeamFnLoggingGrpc;
import org.apache.beam.runners.fnexecution.logging.GrpcLoggingService;
import org.apache.beam.sdk.fn.channel.ManagedChannelFactory;
import org.apache.beam.sdk.fn.server.GrpcFnServer;
import org.apache.beam.sdk.fn.server.InProcessServerFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannel;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * {@link EmbeddedEnvironments.Channels}: the channels Beam's {@link ManagedChannelFactory} builds
 * for a harness are seen through an interceptor and shut down, as the harness itself never does.
 */
@RunWith(JUnit4.class)
public class EmbeddedEnvironmentsTest {
  @Test
  public void theChannelsAHarnessCallsOnAreShutDown() throws Exception {
    ManagedChannel channel;
    try (GrpcFnServer<GrpcLoggingService> server =
        GrpcFnServer.allocatePortAndCreateFor(
            GrpcLoggingService.forWriter((entry) -> {}), InProcessServerFactory.create())) {
      EmbeddedEnvironments.Channels channels = new EmbeddedEnvironments.Channels();
      channel =
          ManagedChannelFactory.createInProcess()
              .withInterceptors(List.of(channels))
              .forDescriptor(server.getApiServiceDescriptor());
      StreamObserver<BeamFnApi.LogEntry.List> stream =
          BeamFnLoggingGrpc.newStub(channel).logging(new Ignoring<>());
      stream.onNext(BeamFnApi.LogEntry.List.getDefaultInstance());
      stream.onCompleted();
      assertFalse(channel.isShutdown());

      assertEquals("channels shut down", 1, channels.shutdown());

      assertTrue("the channel the factory returned is shut down", channel.isShutdown());
      assertEquals("nothing left to shut", 0, channels.shutdown());
    }
    // Its streams ended, the channel terminates.
    assertTrue(channel.awaitTermination(10, TimeUnit.SECONDS));
  }

  @Test
  public void aChannelOfAnotherKindIsLeftAlone() {
    org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Channel other =
        new org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Channel() {
          @Override
          public <ReqT, RespT>
              org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ClientCall<ReqT, RespT> newCall(
                  org.apache.beam.vendor.grpc.v1p60p1.io.grpc.MethodDescriptor<ReqT, RespT> method,
                  org.apache.beam.vendor.grpc.v1p60p1.io.grpc.CallOptions options) {
            throw new UnsupportedOperationException();
          }

          @Override
          public String authority() {
            return "other";
          }
        };
    assertFalse(BeamHooks.shutdownChannel(other));
  }

  /**
   * The harness drops its first answers (as Beam's does for requests that arrive while its control
   * client is being built): the environment waits until one is answered, and the dropped requests
   * are forgotten, so that closing the control client reports nothing outstanding.
   */
  @Test
  public void theRunnerWaitsUntilTheHarnessAnswersAndForgetsWhatWasDropped() throws Exception {
    java.util.List<String> asked = new java.util.ArrayList<>();
    java.util.concurrent.atomic.AtomicReference<String> ended =
        new java.util.concurrent.atomic.AtomicReference<>();
    java.util.concurrent.atomic.AtomicReference<
            org.apache.beam.runners.fnexecution.control.FnApiControlClient>
        client = new java.util.concurrent.atomic.AtomicReference<>();
    StreamObserver<BeamFnApi.InstructionRequest> harness =
        new StreamObserver<BeamFnApi.InstructionRequest>() {
          @Override
          public void onNext(BeamFnApi.InstructionRequest request) {
            asked.add(request.getInstructionId());
            if (asked.size() >= 3) {
              client
                  .get()
                  .asResponseObserver()
                  .onNext(
                      BeamFnApi.InstructionResponse.newBuilder()
                          .setInstructionId(request.getInstructionId())
                          .build());
            }
          }

          @Override
          public void onError(Throwable t) {
            ended.set("error: " + t);
          }

          @Override
          public void onCompleted() {
            ended.set("completed");
          }
        };
    client.set(
        org.apache.beam.runners.fnexecution.control.FnApiControlClient.forRequestObserver(
            "worker-1", harness, new java.util.concurrent.ConcurrentHashMap<>()));

    List<String> dropped =
        EmbeddedEnvironments.awaitAnswering(
            client.get(), "worker-1", new java.util.concurrent.CompletableFuture<>());

    assertEquals(List.of("xinfer-ready-1", "xinfer-ready-2", "xinfer-ready-3"), asked);
    assertEquals(List.of("xinfer-ready-1", "xinfer-ready-2"), dropped);
    client.get().close();
    assertEquals("nothing left outstanding at close", "completed", ended.get());
  }

  /**
   * A harness that was only slow (starting on a busy machine) answers the first request after the
   * runner has sent the second: that answer is taken, not forgotten (Beam logged a forgotten
   * request's late answer as an unknown response, proto and all, on the user's console).
   */
  @Test
  public void aLateAnswerIsTakenNotForgotten() throws Exception {
    java.util.List<String> asked = new java.util.concurrent.CopyOnWriteArrayList<>();
    java.util.concurrent.atomic.AtomicReference<
            org.apache.beam.runners.fnexecution.control.FnApiControlClient>
        client = new java.util.concurrent.atomic.AtomicReference<>();
    java.util.concurrent.ScheduledExecutorService late =
        java.util.concurrent.Executors.newSingleThreadScheduledExecutor();
    java.util.function.Consumer<String> answer =
        id ->
            client
                .get()
                .asResponseObserver()
                .onNext(BeamFnApi.InstructionResponse.newBuilder().setInstructionId(id).build());
    StreamObserver<BeamFnApi.InstructionRequest> harness =
        new Ignoring<BeamFnApi.InstructionRequest>() {
          @Override
          public void onNext(BeamFnApi.InstructionRequest request) {
            asked.add(request.getInstructionId());
            if (asked.size() == 2) {
              answer.accept(request.getInstructionId());
              late.schedule(
                  () -> answer.accept("xinfer-ready-1"),
                  50,
                  java.util.concurrent.TimeUnit.MILLISECONDS);
            }
          }
        };
    client.set(
        org.apache.beam.runners.fnexecution.control.FnApiControlClient.forRequestObserver(
            "worker-3", harness, new java.util.concurrent.ConcurrentHashMap<>()));
    try {
      List<String> dropped =
          EmbeddedEnvironments.awaitAnswering(
              client.get(), "worker-3", new java.util.concurrent.CompletableFuture<>());
      assertEquals(List.of("xinfer-ready-1", "xinfer-ready-2"), asked);
      assertEquals("the late answer was taken", List.of(), dropped);
    } finally {
      late.shutdownNow();
    }
  }

  @Test
  public void aHarnessThatEndedWithoutAnsweringFailsTheEnvironment() {
    java.util.concurrent.CompletableFuture<Object> ended =
        new java.util.concurrent.CompletableFuture<>();
    ended.completeExceptionally(new IllegalStateException("no classes"));
    IllegalStateException e =
        org.junit.Assert.assertThrows(
            IllegalStateException.class,
            () ->
                EmbeddedEnvironments.awaitAnswering(
                    org.apache.beam.runners.fnexecution.control.FnApiControlClient
                        .forRequestObserver(
                            "worker-2",
                            new Ignoring<BeamFnApi.InstructionRequest>(),
                            new java.util.concurrent.ConcurrentHashMap<>()),
                    "worker-2",
                    ended));
    assertTrue(
        e.getMessage(), e.getMessage().contains("worker-2 connected but answered no request"));
    assertTrue(e.getMessage(), e.getMessage().contains("no classes"));
  }

  /** A stream's other end that takes everything and does nothing. */
  private static class Ignoring<T> implements StreamObserver<T> {
    @Override
    public void onNext(T value) {}

    @Override
    public void onError(Throwable t) {}

    @Override
    public void onCompleted() {}
  }
}
