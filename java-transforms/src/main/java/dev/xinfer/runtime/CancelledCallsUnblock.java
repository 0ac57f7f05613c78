package dev.xinfer.runtime;

import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ForwardingServerCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ForwardingServerCallListener;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Metadata;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerCallHandler;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptor;

/**
 * Makes a server stream whose peer is gone report itself ready, so that a writer waiting for room
 * on it goes on, and fails, instead of waiting forever.
 *
 * <p>Why: the runner sends a bundle's data to an SDK worker through Beam's {@code
 * DirectStreamObserver}, which waits while the stream is not ready and is woken only by gRPC's
 * on-ready callback or by its phaser's termination. On the server side of the Fn API ({@code
 * OutboundObserverFactory.serverDirect()}, the data service of Beam 2.62's {@code
 * DefaultJobBundleFactory}) nothing terminates that phaser when the call is cancelled, and a
 * cancelled call is never ready again: when the worker dies (kill -9) while the runner waits for
 * room, the task thread waits forever and the job neither fails nor restarts (seen as a Flink job
 * whose output stopped after an SDK worker was killed, about one kill in seven). With this
 * interceptor the waiting writer sees the stream ready within the writer's next look (at most a few
 * seconds), writes, and gets gRPC's "call already cancelled": the bundle fails and the runner
 * restarts it.
 */
@Internal
public final class CancelledCallsUnblock implements ServerInterceptor {
  @Override
  public <ReqT, RespT> ServerCall.Listener<ReqT> interceptCall(
      ServerCall<ReqT, RespT> call, Metadata headers, ServerCallHandler<ReqT, RespT> next) {
    AtomicBoolean cancelled = new AtomicBoolean();
    ServerCall<ReqT, RespT> reporting =
        new ForwardingServerCall.SimpleForwardingServerCall<ReqT, RespT>(call) {
          @Override
          public boolean isReady() {
            return cancelled.get() || super.isReady();
          }
        };
    return new ForwardingServerCallListener.SimpleForwardingServerCallListener<ReqT>(
        next.startCall(reporting, headers)) {
      @Override
      public void onCancel() {
        cancelled.set(true);
        super.onCancel();
      }
    };
  }
}
