package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.empty;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StateRequest;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.StateResponse;
import org.apache.beam.model.fnexecution.v1.BeamFnStateGrpc;
import org.apache.beam.runners.fnexecution.state.GrpcStateService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ForwardingServerCallListener;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannel;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Metadata;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerCallHandler;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerServiceDefinition;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyChannelBuilder;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The end of a job as Beam's state service and an SDK worker play it, performed in both orders: the
 * runner closes the state service (completing the worker's state stream) while the worker's
 * half-close of the same stream waits to be handled, which printed an ERROR on a clean run; and the
 * worker half-closes first, after which the runner's close threw. Through xinfer's server factory
 * neither reports anything; through a plain gRPC server, each reports "call already closed".
 */
@RunWith(JUnit4.class)
public class CloseOnceTest {
  /** gRPC's executor, which logs what a call's handler threw (vendored gRPC 1.60.1). */
  private static final String EXECUTOR_LOGGER =
      "org.apache.beam.vendor.grpc.v1p60p1.io.grpc.internal.SerializingExecutor";

  /** Which side ends the stream first. */
  private enum First {
    RUNNER,
    WORKER
  }

  /**
   * What was reported while a job's state stream ended from both sides: gRPC's log records at
   * WARNING or above, and what the state service's close threw.
   */
  private static List<String> endAStateStreamFromBothSides(boolean xinferFactory, First first)
      throws Exception {
    List<String> reported = new CopyOnWriteArrayList<>();
    Handler handler =
        new Handler() {
          @Override
          public void publish(LogRecord record) {
            if (record.getLevel().intValue() >= Level.WARNING.intValue()) {
              reported.add(record.getMessage() + " " + record.getThrown());
            }
          }

          @Override
          public void flush() {}

          @Override
          public void close() {}
        };
    Logger executorLog = Logger.getLogger(EXECUTOR_LOGGER);
    executorLog.addHandler(handler);
    GrpcStateService state = GrpcStateService.create();
    // Holds the worker's half-close, once it has arrived, until the runner has closed the service.
    CountDownLatch halfCloseArrived = new CountDownLatch(1);
    CountDownLatch runnerClosed = new CountDownLatch(first == First.RUNNER ? 1 : 0);
    // gRPC runs a call's callbacks in order: the call's end comes after the half-close's report.
    CountDownLatch callEnded = new CountDownLatch(1);
    ServerServiceDefinition ordered =
        ServerInterceptors.intercept(
            state,
            new ServerInterceptor() {
              @Override
              public <ReqT, RespT> ServerCall.Listener<ReqT> interceptCall(
                  ServerCall<ReqT, RespT> call,
                  Metadata headers,
                  ServerCallHandler<ReqT, RespT> next) {
                return new ForwardingServerCallListener.SimpleForwardingServerCallListener<ReqT>(
                    next.startCall(call, headers)) {
                  @Override
                  public void onHalfClose() {
                    halfCloseArrived.countDown();
                    try {
                      runnerClosed.await(30, TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                      Thread.currentThread().interrupt();
                    }
                    super.onHalfClose();
                  }

                  @Override
                  public void onComplete() {
                    callEnded.countDown();
                    super.onComplete();
                  }

                  @Override
                  public void onCancel() {
                    callEnded.countDown();
                    super.onCancel();
                  }
                };
              }
            });
    TestServers.Served served = TestServers.serve(() -> ordered, xinferFactory);
    Server server = served.server();
    String target = served.target();
    ManagedChannel channel = NettyChannelBuilder.forTarget(target).usePlaintext().build();
    try {
      CountDownLatch answered = new CountDownLatch(1);
      CompletableFuture<Void> completed = new CompletableFuture<>();
      StreamObserver<StateRequest> requests =
          BeamFnStateGrpc.newStub(channel)
              .state(
                  new StreamObserver<StateResponse>() {
                    @Override
                    public void onNext(StateResponse response) {
                      answered.countDown();
                    }

                    @Override
                    public void onError(Throwable t) {
                      completed.completeExceptionally(t);
                    }

                    @Override
                    public void onCompleted() {
                      completed.complete(null);
                    }
                  });
      // One request, answered with "unknown instruction", so that the service holds the stream.
      requests.onNext(StateRequest.newBuilder().setId("1").setInstructionId("none").build());
      assertTrue("the state service answered", answered.await(30, TimeUnit.SECONDS));
      requests.onCompleted(); // the SDK harness half-closes its state stream at its end
      assertTrue("the half-close arrived", halfCloseArrived.await(30, TimeUnit.SECONDS));
      if (first == First.WORKER) {
        completed.get(30, TimeUnit.SECONDS); // the service answered the half-close by closing
      }
      try {
        state.close(); // the runner tears the job down
      } catch (Exception e) {
        reported.add("GrpcStateService.close threw " + e);
      }
      runnerClosed.countDown();
      completed.get(30, TimeUnit.SECONDS);
      assertTrue("the call ended on the server", callEnded.await(30, TimeUnit.SECONDS));
      return reported;
    } finally {
      channel.shutdownNow();
      channel.awaitTermination(10, TimeUnit.SECONDS);
      server.shutdownNow();
      server.awaitTermination(10, TimeUnit.SECONDS);
      executorLog.removeHandler(handler);
    }
  }

  @Test
  public void theRunnerClosingWhileTheWorkerHalfClosesReportsNothing() throws Exception {
    assertThat(endAStateStreamFromBothSides(true, First.RUNNER), empty());
  }

  @Test
  public void theWorkerHalfClosingBeforeTheRunnerClosesReportsNothing() throws Exception {
    assertThat(endAStateStreamFromBothSides(true, First.WORKER), empty());
  }

  @Test
  public void withoutItBothOrdersReportCallAlreadyClosed() throws Exception {
    // What Beam 2.62 does on its own. If this fails after a Beam upgrade, Beam no longer closes a
    // state stream twice and CloseOnce can go.
    for (First first : First.values()) {
      assertThat(
          first + " first",
          String.join("\n", endAStateStreamFromBothSides(false, first)),
          containsString("call already closed"));
    }
  }
}
