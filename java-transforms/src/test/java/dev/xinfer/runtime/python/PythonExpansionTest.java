package dev.xinfer.runtime.python;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.apache.beam.model.expansion.v1.ExpansionApi;
import org.apache.beam.model.expansion.v1.ExpansionServiceGrpc;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannel;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannelBuilder;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Status;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.StatusRuntimeException;
import org.junit.Test;

public class PythonExpansionTest {
  /** A service that takes connections on loopback and never answers: expansion gives up. */
  @Test
  public void anExpansionCallToAServiceThatHangsEndsAtTheDeadline() throws Exception {
    List<Socket> held = new ArrayList<>();
    try (ServerSocket silent = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
      Thread acceptor =
          new Thread(
              () -> {
                try {
                  while (true) {
                    held.add(silent.accept());
                  }
                } catch (IOException e) {
                  // closed
                }
              });
      acceptor.setDaemon(true);
      acceptor.start();
      ManagedChannel channel =
          ManagedChannelBuilder.forTarget("127.0.0.1:" + silent.getLocalPort())
              .usePlaintext()
              .intercept(PythonExpansion.deadline(Duration.ofMillis(500)))
              .build();
      try {
        long start = System.nanoTime();
        StatusRuntimeException e =
            assertThrows(
                StatusRuntimeException.class,
                () ->
                    ExpansionServiceGrpc.newBlockingStub(channel)
                        .expand(ExpansionApi.ExpansionRequest.getDefaultInstance()));
        assertEquals(Status.Code.DEADLINE_EXCEEDED, e.getStatus().getCode());
        assertTrue((System.nanoTime() - start) / 1e9 < 10);
      } finally {
        channel.shutdownNow();
        for (Socket s : held) {
          s.close();
        }
      }
    }
  }
}
