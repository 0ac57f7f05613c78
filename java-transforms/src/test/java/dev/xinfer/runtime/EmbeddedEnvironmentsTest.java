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
          BeamFnLoggingGrpc.newStub(channel).logging(new Ignoring());
      stream.onNext(BeamFnApi.LogEntry.List.getDefaultInstance());
      assertFalse(channel.isShutdown());

      assertEquals("channels shut down", 1, channels.shutdown());

      assertTrue("the channel the factory returned is shut down", channel.isShutdown());
      assertEquals("nothing left to shut", 0, channels.shutdown());
    }
    // The open logging stream ends with its server; then the channel has terminated.
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

  private static final class Ignoring implements StreamObserver<BeamFnApi.LogControl> {
    @Override
    public void onNext(BeamFnApi.LogControl value) {}

    @Override
    public void onError(Throwable t) {}

    @Override
    public void onCompleted() {}
  }
}
