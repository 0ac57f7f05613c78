package dev.xinfer.runtime;

import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ForwardingServerCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Metadata;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerCallHandler;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Status;

/**
 * Lets a server call be closed once: a second close, which gRPC refuses with {@code
 * IllegalStateException: call already closed}, is dropped.
 *
 * <p>Why: at the end of every job Beam 2.62's {@code GrpcStateService.close()} completes each SDK
 * worker's state stream from the runner's side, and the worker, told that its job is over,
 * half-closes the same stream, to which {@code GrpcStateService.Inbound.onCompleted} answers by
 * completing it again. Whichever comes second is refused: when the worker's half-close does, gRPC's
 * executor logs the refusal as an ERROR with its stack trace ({@code SerializingExecutor: Exception
 * while executing runnable ... call already closed}) on a job that succeeded (seen about once in 30
 * jobs); when the runner's close does, {@code close()} throws it into the job's teardown. The
 * stream is over either way, and the first close has said how.
 */
@Internal
public final class CloseOnce implements ServerInterceptor {
  @Override
  public <ReqT, RespT> ServerCall.Listener<ReqT> interceptCall(
      ServerCall<ReqT, RespT> call, Metadata headers, ServerCallHandler<ReqT, RespT> next) {
    AtomicBoolean closed = new AtomicBoolean();
    return next.startCall(
        new ForwardingServerCall.SimpleForwardingServerCall<ReqT, RespT>(call) {
          @Override
          public void close(Status status, Metadata trailers) {
            if (closed.compareAndSet(false, true)) {
              super.close(status, trailers);
            }
          }
        },
        headers);
  }
}
