package dev.xinfer.runtime;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.List;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

/** A gRPC service on 127.0.0.1, served as xinfer serves the Fn API, or by a plain gRPC server. */
final class TestServers {
  private TestServers() {}

  /** A started server and the host:port its clients dial. */
  record Served(Server server, String target) {}

  /**
   * Serves {@code service} through xinfer's {@link LoopbackServerFactory} (with its interceptors)
   * when {@code xinferFactory}, else through a plain gRPC server: what Beam does on its own.
   */
  static Served serve(BindableService service, boolean xinferFactory) throws IOException {
    if (xinferFactory) {
      Endpoints.ApiServiceDescriptor.Builder descriptor =
          Endpoints.ApiServiceDescriptor.newBuilder();
      Server server =
          new LoopbackServerFactory().allocateAddressAndCreate(List.of(service), descriptor);
      return new Served(server, descriptor.getUrl());
    }
    Server server =
        NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
            .addService(service)
            .build()
            .start();
    return new Served(server, "127.0.0.1:" + server.getPort());
  }
}
