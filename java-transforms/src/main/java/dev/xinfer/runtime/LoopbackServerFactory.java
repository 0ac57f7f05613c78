package dev.xinfer.runtime;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

/**
 * Beam's default gRPC server factory ({@code ServerFactory.createDefault()}), bound to 127.0.0.1
 * instead of all interfaces: for the Fn API servers of xinfer's jobs ({@link LoopbackFnServers}),
 * and for any job server that runs them. A writer waiting for room on a stream whose peer has gone
 * fails instead of waiting forever ({@link CancelledCallsUnblock}), and a stream that both ends
 * close is closed once ({@link CloseOnce}).
 */
@Internal
public final class LoopbackServerFactory extends ServerFactory {
  private static final int KEEP_ALIVE_TIME_SEC = 20;
  private static final String HOST = "127.0.0.1";

  @Override
  public Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
      throws IOException {
    Server server =
        start(services, new InetSocketAddress(InetAddress.getByName(HOST), /* any port */ 0));
    descriptor.setUrl(HOST + ":" + server.getPort());
    return server;
  }

  @Override
  public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
      throws IOException {
    SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
    if (!(address instanceof InetSocketAddress)) {
      throw new IllegalArgumentException(
          "xinfer's loopback server factory needs a host:port URL, got " + descriptor.getUrl());
    }
    return start(services, (InetSocketAddress) address);
  }

  private static Server start(List<BindableService> services, InetSocketAddress address)
      throws IOException {
    NettyServerBuilder builder =
        NettyServerBuilder.forAddress(address)
            // As Beam's factory: message size is bounded by the layers above.
            .maxInboundMessageSize(Integer.MAX_VALUE)
            .permitKeepAliveTime(KEEP_ALIVE_TIME_SEC, TimeUnit.SECONDS);
    for (BindableService service : services) {
      builder.addService(
          ServerInterceptors.intercept(
              service,
              GrpcContextHeaderAccessorProvider.interceptor(),
              // A stream whose peer died must not hold a writer waiting for room forever.
              new CancelledCallsUnblock(),
              // The runner and the SDK worker both end a state stream at a job's end.
              new CloseOnce()));
    }
    return builder.build().start();
  }
}
