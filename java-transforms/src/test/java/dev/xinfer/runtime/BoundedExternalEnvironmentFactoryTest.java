package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.beam.model.fnexecution.v1.BeamFnApi;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.fnexecution.artifact.ArtifactRetrievalService;
import org.apache.beam.runners.fnexecution.control.ControlClientPool;
import org.apache.beam.runners.fnexecution.control.FnApiControlClientPoolService;
import org.apache.beam.runners.fnexecution.control.MapControlClientPool;
import org.apache.beam.runners.fnexecution.environment.EnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.ExternalEnvironmentFactory;
import org.apache.beam.runners.fnexecution.logging.GrpcLoggingService;
import org.apache.beam.runners.fnexecution.logging.Slf4jLogWriter;
import org.apache.beam.runners.fnexecution.provisioning.StaticGrpcProvisionService;
import org.apache.beam.sdk.fn.IdGenerators;
import org.apache.beam.sdk.fn.server.FnService;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.GrpcFnServer;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;
import org.junit.After;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * A worker pool that says it started a worker which never connects (as a worker killed before it
 * connected): Beam's factory waits for ever; xinfer's fails within its bound, naming the fix.
 */
@RunWith(JUnit4.class)
public class BoundedExternalEnvironmentFactoryTest {
  private final java.util.List<GrpcFnServer<?>> servers = new java.util.ArrayList<>();

  /**
   * A pool that answers every StartWorker with {@code error} (empty: "started") and starts none.
   */
  private static final class SilentPool
      extends BeamFnExternalWorkerPoolGrpc.BeamFnExternalWorkerPoolImplBase implements FnService {
    final AtomicInteger starts = new AtomicInteger();
    private final String error;

    SilentPool(String error) {
      this.error = error;
    }

    @Override
    public void startWorker(
        BeamFnApi.StartWorkerRequest request,
        StreamObserver<BeamFnApi.StartWorkerResponse> response) {
      starts.incrementAndGet();
      response.onNext(BeamFnApi.StartWorkerResponse.newBuilder().setError(error).build());
      response.onCompleted();
    }

    @Override
    public void close() {}
  }

  private <T extends FnService> GrpcFnServer<T> serve(T service) throws Exception {
    GrpcFnServer<T> server =
        GrpcFnServer.allocatePortAndCreateFor(service, new LoopbackServerFactory());
    servers.add(server);
    return server;
  }

  /** {@code provider}'s factory over real Fn API servers of its own (the pool gets their URLs). */
  private EnvironmentFactory factory(EnvironmentFactory.Provider provider) throws Exception {
    ControlClientPool clients = MapControlClientPool.create();
    return provider.createEnvironmentFactory(
        serve(
            FnApiControlClientPoolService.offeringClientsToPool(
                clients.getSink(), GrpcContextHeaderAccessorProvider.getHeaderAccessor())),
        serve(GrpcLoggingService.forWriter(Slf4jLogWriter.getDefault())),
        serve(new ArtifactRetrievalService()),
        serve(
            StaticGrpcProvisionService.create(
                org.apache.beam.model.fnexecution.v1.ProvisionApi.ProvisionInfo
                    .getDefaultInstance(),
                GrpcContextHeaderAccessorProvider.getHeaderAccessor())),
        clients,
        IdGenerators.incrementingLongs());
  }

  private EnvironmentFactory factory(Duration timeout) throws Exception {
    return factory(new BoundedExternalEnvironmentFactory.Provider(timeout));
  }

  private static RunnerApi.Environment external(GrpcFnServer<?> pool) {
    return RunnerApi.Environment.newBuilder()
        .setUrn(BeamUrns.getUrn(RunnerApi.StandardEnvironments.Environments.EXTERNAL))
        .setPayload(
            RunnerApi.ExternalPayload.newBuilder()
                .setEndpoint(
                    Endpoints.ApiServiceDescriptor.newBuilder()
                        .setUrl(pool.getApiServiceDescriptor().getUrl()))
                .build()
                .toByteString())
        .build();
  }

  @After
  public void close() throws Exception {
    for (GrpcFnServer<?> server : servers) {
      server.close();
    }
  }

  @Test
  public void aWorkerThatNeverConnectsFailsWithinTheBound() throws Exception {
    SilentPool pool = new SilentPool("");
    RunnerApi.Environment environment = external(serve(pool));
    EnvironmentFactory factory = factory(Duration.ofSeconds(2));
    long start = System.nanoTime();
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class, () -> factory.createEnvironment(environment, "1-7"));
    long seconds = (System.nanoTime() - start) / 1_000_000_000L;
    assertTrue("asked the pool once: " + pool.starts.get(), pool.starts.get() == 1);
    assertTrue("failed after " + seconds + " s", seconds >= 2 && seconds < 10);
    assertThat(e.getMessage(), containsString("SDK worker 1-7"));
    assertThat(e.getMessage(), containsString("did not connect"));
    assertThat(e.getMessage(), containsString("within 2 s"));
    assertThat(e.getMessage(), containsString("--xinferServiceStartTimeoutSeconds"));
  }

  /** What the bound is for: Beam's own factory is still waiting after 5 s (2-minute rounds). */
  @Test
  public void beamsFactoryWaitsOn() throws Exception {
    RunnerApi.Environment environment = external(serve(new SilentPool("")));
    EnvironmentFactory beams = factory(new ExternalEnvironmentFactory.Provider());
    java.util.concurrent.CompletableFuture<Object> waiting =
        new java.util.concurrent.CompletableFuture<>();
    Thread thread =
        new Thread(
            () -> {
              try {
                waiting.complete(beams.createEnvironment(environment, "1-9"));
              } catch (Throwable t) {
                waiting.completeExceptionally(t);
              }
            });
    thread.start();
    Thread.sleep(5_000);
    assertFalse("Beam's factory returned or failed within 5 s", waiting.isDone());
    thread.interrupt(); // Beam's factory gives up on an interrupt only
    thread.join(10_000);
  }

  @Test
  public void aPoolThatRefusesFailsWithItsReason() throws Exception {
    RunnerApi.Environment environment = external(serve(new SilentPool("refused: no secret")));
    EnvironmentFactory factory = factory(Duration.ofSeconds(30));
    RuntimeException e =
        assertThrows(RuntimeException.class, () -> factory.createEnvironment(environment, "1-8"));
    assertThat(e.getMessage(), containsString("refused: no secret"));
  }

  /**
   * On a cluster node whose environment names its own pool (as {@code ./xinfer cluster up flink
   * --taskmanagers N} sets it for each TaskManager), the job's EXTERNAL environment is served by
   * that pool with that pool's secret; elsewhere it is left as the job gave it.
   */
  @Test
  public void aNodeWithAPoolOfItsOwnServesTheJobsEnvironment() throws Exception {
    RunnerApi.Environment job =
        RunnerApi.Environment.newBuilder()
            .setUrn(BeamUrns.getUrn(RunnerApi.StandardEnvironments.Environments.EXTERNAL))
            .setPayload(
                RunnerApi.ExternalPayload.newBuilder()
                    .setEndpoint(
                        Endpoints.ApiServiceDescriptor.newBuilder().setUrl("127.0.0.1:50000"))
                    .putParams("xinfer_token", "the-cluster-pool-secret")
                    .build()
                    .toByteString())
            .build();
    java.nio.file.Path secret = java.nio.file.Files.createTempFile("node-pool", ".secret");
    try {
      java.nio.file.Files.writeString(secret, "node-2-secret-0123456789abcdefghijklmnop");
      java.nio.file.Files.setPosixFilePermissions(
          secret, java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
      RunnerApi.ExternalPayload onNode =
          RunnerApi.ExternalPayload.parseFrom(
              BoundedExternalEnvironmentFactory.onNode(job, "127.0.0.1:50100", secret.toString())
                  .getPayload());
      org.junit.Assert.assertEquals("127.0.0.1:50100", onNode.getEndpoint().getUrl());
      org.junit.Assert.assertEquals(
          "node-2-secret-0123456789abcdefghijklmnop", onNode.getParamsOrThrow("xinfer_token"));
      org.junit.Assert.assertEquals(job, BoundedExternalEnvironmentFactory.onNode(job, null, null));
    } finally {
      java.nio.file.Files.delete(secret);
    }
  }
}
