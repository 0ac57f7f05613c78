package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.beam.sdk.fn.stream.OutboundObserverFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.CallOptions;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ClientCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannel;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Metadata;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.MethodDescriptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerServiceDefinition;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyChannelBuilder;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.ServerCalls;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The hang this closes, performed: a server writes to a client through Beam's server-side {@code
 * DirectStreamObserver} (as the runner writes a bundle's data to an SDK worker), the client stops
 * reading so the stream fills, then the client goes away. Through xinfer's server factory the
 * writer fails within seconds; without the interceptor it still waits.
 */
@RunWith(JUnit4.class)
public class CancelledCallsUnblockTest {
  private static final MethodDescriptor.Marshaller<byte[]> BYTES =
      new MethodDescriptor.Marshaller<byte[]>() {
        @Override
        public InputStream stream(byte[] value) {
          return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream stream) {
          try {
            return stream.readAllBytes();
          } catch (IOException e) {
            throw new IllegalStateException(e);
          }
        }
      };

  private static final MethodDescriptor<byte[], byte[]> SINK =
      MethodDescriptor.<byte[], byte[]>newBuilder()
          .setType(MethodDescriptor.MethodType.BIDI_STREAMING)
          .setFullMethodName("xinfer.test.Sink/Stream")
          .setRequestMarshaller(BYTES)
          .setResponseMarshaller(BYTES)
          .build();

  /** Starts the writer on its own thread; the future completes with what ended its writing. */
  private static BindableService writerService(
      CompletableFuture<Throwable> ended, CountDownLatch streaming) {
    return () ->
        ServerServiceDefinition.builder("xinfer.test.Sink")
            .addMethod(
                SINK,
                ServerCalls.asyncBidiStreamingCall(
                    (StreamObserver<byte[]> responses) -> {
                      StreamObserver<byte[]> inbound =
                          new StreamObserver<byte[]>() {
                            @Override
                            public void onNext(byte[] value) {}

                            @Override
                            public void onError(Throwable t) {}

                            @Override
                            public void onCompleted() {}
                          };
                      StreamObserver<byte[]> out =
                          OutboundObserverFactory.serverDirect()
                              .outboundObserverFor(in -> responses, inbound);
                      Thread writer =
                          new Thread(
                              () -> {
                                byte[] chunk = new byte[64 * 1024];
                                try {
                                  while (true) {
                                    out.onNext(chunk);
                                    streaming.countDown();
                                  }
                                } catch (Throwable t) {
                                  ended.complete(t);
                                }
                              },
                              "xinfer-test-writer");
                      writer.setDaemon(true);
                      writer.start();
                      return inbound;
                    }))
            .build();
  }

  private static CompletableFuture<Throwable> writeUntilTheClientGoes(boolean xinferFactory)
      throws Exception {
    CompletableFuture<Throwable> ended = new CompletableFuture<>();
    CountDownLatch streaming = new CountDownLatch(1);
    BindableService service = writerService(ended, streaming);
    TestServers.Served served = TestServers.serve(service, xinferFactory);
    Server server = served.server();
    String target = served.target();
    ManagedChannel channel = NettyChannelBuilder.forTarget(target).usePlaintext().build();
    try {
      ClientCall<byte[], byte[]> call = channel.newCall(SINK, CallOptions.DEFAULT);
      // Never asks for a message: the stream fills and the writer waits for room.
      call.start(new ClientCall.Listener<byte[]>() {}, new Metadata());
      call.sendMessage(new byte[1]);
      assertTrue("the writer started", streaming.await(30, TimeUnit.SECONDS));
      Thread.sleep(2000); // the writer is now waiting for room
      assertFalse("the writer waits while the client reads nothing", ended.isDone());
      channel.shutdownNow(); // the client dies
      channel.awaitTermination(10, TimeUnit.SECONDS);
      try {
        ended.get(10, TimeUnit.SECONDS);
      } catch (java.util.concurrent.TimeoutException e) {
        // left waiting: reported by the caller
      }
      return ended;
    } finally {
      channel.shutdownNow();
      server.shutdownNow();
    }
  }

  @Test
  public void aWriterWaitingOnAStreamWhosePeerDiedFails() throws Exception {
    CompletableFuture<Throwable> ended = writeUntilTheClientGoes(true);
    assertTrue("the writer gave up once the client was gone", ended.isDone());
    Throwable why = ended.get();
    assertNotNull(why);
    assertThat(String.valueOf(why), containsString("CANCELLED"));
  }

  @Test
  public void withoutItTheWriterWaitsForever() throws Exception {
    // What Beam 2.62 does on its own: the cancelled call is never ready again.
    assertFalse(
        "Beam's server-side writer still waits 10 s after its client died",
        writeUntilTheClientGoes(false).isDone());
  }
}
