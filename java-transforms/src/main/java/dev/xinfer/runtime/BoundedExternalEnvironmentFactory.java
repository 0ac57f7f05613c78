package dev.xinfer.runtime;

import dev.xinfer.runtime.python.PythonServices;
import dev.xinfer.runtime.python.ServiceSecret;
import java.io.IOException;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.beam.model.fnexecution.v1.BeamFnApi;
import org.apache.beam.model.fnexecution.v1.BeamFnExternalWorkerPoolGrpc;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.RunnerApi.Environment;
import org.apache.beam.runners.fnexecution.artifact.ArtifactRetrievalService;
import org.apache.beam.runners.fnexecution.control.ControlClientPool;
import org.apache.beam.runners.fnexecution.control.FnApiControlClientPoolService;
import org.apache.beam.runners.fnexecution.control.InstructionRequestHandler;
import org.apache.beam.runners.fnexecution.environment.EnvironmentFactory;
import org.apache.beam.runners.fnexecution.environment.RemoteEnvironment;
import org.apache.beam.runners.fnexecution.logging.GrpcLoggingService;
import org.apache.beam.runners.fnexecution.provisioning.StaticGrpcProvisionService;
import org.apache.beam.sdk.fn.IdGenerator;
import org.apache.beam.sdk.fn.channel.ManagedChannelFactory;
import org.apache.beam.sdk.fn.server.GrpcFnServer;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannel;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The EXTERNAL (worker pool) environment, as Beam's {@code ExternalEnvironmentFactory}, with a
 * bounded wait for the worker to connect.
 *
 * <p>Beam asks the pool to start a worker, then waits for the worker's control connection for as
 * long as it takes: a worker that dies before it connects (killed, out of memory, a broken Python
 * environment) leaves the task waiting for ever, with no failure and so no retry (on Spark a
 * streaming job's output stops for good). Here the wait fails at once when this JVM's own pool
 * reports the worker's death, and after {@code --xinferServiceStartTimeoutSeconds} otherwise, with
 * a message that names the worker, the pool and what to check; the runner then fails the task and
 * retries it (Flink: restarts the job from its last checkpoint) with a new worker.
 */
final class BoundedExternalEnvironmentFactory implements EnvironmentFactory {
  private static final Logger LOG =
      LoggerFactory.getLogger(BoundedExternalEnvironmentFactory.class);
  private static final Duration POLL = Duration.ofMillis(500);

  private final GrpcFnServer<FnApiControlClientPoolService> controlServiceServer;
  private final GrpcFnServer<GrpcLoggingService> loggingServiceServer;
  private final GrpcFnServer<ArtifactRetrievalService> retrievalServiceServer;
  private final GrpcFnServer<StaticGrpcProvisionService> provisioningServiceServer;
  private final ControlClientPool.Source clientSource;
  private final Duration connectTimeout;

  BoundedExternalEnvironmentFactory(
      GrpcFnServer<FnApiControlClientPoolService> controlServiceServer,
      GrpcFnServer<GrpcLoggingService> loggingServiceServer,
      GrpcFnServer<ArtifactRetrievalService> retrievalServiceServer,
      GrpcFnServer<StaticGrpcProvisionService> provisioningServiceServer,
      ControlClientPool.Source clientSource,
      Duration connectTimeout) {
    this.controlServiceServer = controlServiceServer;
    this.loggingServiceServer = loggingServiceServer;
    this.retrievalServiceServer = retrievalServiceServer;
    this.provisioningServiceServer = provisioningServiceServer;
    this.clientSource = clientSource;
    this.connectTimeout = connectTimeout;
  }

  @Override
  public RemoteEnvironment createEnvironment(Environment stageEnvironment, String workerId)
      throws Exception {
    Environment environment = onThisNode(LoopbackFnServers.current(stageEnvironment));
    if (!environment
        .getUrn()
        .equals(BeamUrns.getUrn(RunnerApi.StandardEnvironments.Environments.EXTERNAL))) {
      throw new IllegalStateException(
          "The passed environment does not contain an ExternalPayload.");
    }
    RunnerApi.ExternalPayload payload =
        RunnerApi.ExternalPayload.parseFrom(environment.getPayload());
    String pool = payload.getEndpoint().getUrl();
    BeamFnApi.StartWorkerRequest request =
        BeamFnApi.StartWorkerRequest.newBuilder()
            .setWorkerId(workerId)
            .setControlEndpoint(controlServiceServer.getApiServiceDescriptor())
            .setLoggingEndpoint(loggingServiceServer.getApiServiceDescriptor())
            .setArtifactEndpoint(retrievalServiceServer.getApiServiceDescriptor())
            .setProvisionEndpoint(provisioningServiceServer.getApiServiceDescriptor())
            .putAllParams(payload.getParamsMap())
            .build();
    long started = System.nanoTime();
    ManagedChannel channel =
        ManagedChannelFactory.createDefault().forDescriptor(payload.getEndpoint());
    try {
      BeamFnApi.StartWorkerResponse response =
          BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel).startWorker(request);
      if (!response.getError().isEmpty()) {
        throw new RuntimeException(response.getError());
      }
      InstructionRequestHandler handler = awaitConnection(workerId, pool, started);
      return new Remote(stageEnvironment, handler, channel, workerId);
    } catch (Exception | Error e) {
      channel.shutdownNow();
      throw e;
    }
  }

  /** The variable naming the Python worker pool of the node this JVM runs on (host:port). */
  static final String NODE_WORKER_POOL = "XINFER_NODE_WORKER_POOL";

  /** The variable naming the file with that pool's secret. */
  static final String NODE_WORKER_POOL_SECRET_FILE = "XINFER_NODE_WORKER_POOL_SECRET_FILE";

  private static volatile boolean nodePoolLogged;

  /**
   * {@code environment} served by the worker pool of the node this JVM runs on, when its cluster
   * gives each node a pool of its own ({@value #NODE_WORKER_POOL} and {@value
   * #NODE_WORKER_POOL_SECRET_FILE} in a TaskManager's or Spark worker's environment, as {@code
   * ./xinfer cluster up} sets them): a job names one pool, and each node's tasks then run their
   * Python stages beside them. Unchanged elsewhere.
   */
  static Environment onThisNode(Environment environment) throws IOException {
    return onNode(
        environment, System.getenv(NODE_WORKER_POOL), System.getenv(NODE_WORKER_POOL_SECRET_FILE));
  }

  static Environment onNode(
      Environment environment, @Nullable String pool, @Nullable String secretFile)
      throws IOException {
    if (pool == null || pool.isEmpty()) {
      return environment;
    }
    RunnerApi.ExternalPayload.Builder payload =
        RunnerApi.ExternalPayload.parseFrom(environment.getPayload()).toBuilder();
    payload.getEndpointBuilder().setUrl(pool);
    if (secretFile != null && !secretFile.isEmpty()) {
      payload.putParams(
          ServiceSecret.POOL_PARAM, ServiceSecret.read(secretFile, NODE_WORKER_POOL_SECRET_FILE));
    }
    if (!nodePoolLogged) {
      nodePoolLogged = true;
      LOG.info(
          "xinfer: this node's Python worker pool {} runs the Python stages of its tasks ({})",
          pool,
          NODE_WORKER_POOL);
    }
    return environment.toBuilder().setPayload(payload.build().toByteString()).build();
  }

  private InstructionRequestHandler awaitConnection(String workerId, String pool, long started)
      throws Exception {
    long deadline = started + connectTimeout.toNanos();
    while (true) {
      try {
        return clientSource.take(workerId, POLL);
      } catch (TimeoutException e) {
        String death = deathNotice(workerId, started);
        if (death != null) {
          throw new IllegalStateException(
              String.format(
                  "SDK worker %s died before it connected to this runner; the worker pool at %s"
                      + " reported: %s. The task fails and the runner retries it with a new"
                      + " worker.",
                  workerId, pool, death));
        }
        if (System.nanoTime() - deadline > 0) {
          throw new IllegalStateException(
              String.format(
                  "SDK worker %s, started by the worker pool at %s, did not connect to this"
                      + " runner's control service at %s within %d s. Check the pool's log (a"
                      + " worker that failed at start-up says why there) and that the pool can"
                      + " reach %s; on a slow machine raise --xinferServiceStartTimeoutSeconds."
                      + " The task fails and the runner retries it with a new worker.",
                  workerId,
                  pool,
                  controlServiceServer.getApiServiceDescriptor().getUrl(),
                  connectTimeout.getSeconds(),
                  controlServiceServer.getApiServiceDescriptor().getUrl()));
        }
        LOG.debug("Waiting for SDK worker {} from the worker pool at {}", workerId, pool);
      }
    }
  }

  /** What this JVM's own pool said about the worker's death since {@code sinceNanos}, if it did. */
  private static @Nullable String deathNotice(String workerId, long sinceNanos) {
    List<String> notices = PythonServices.noticesSince(sinceNanos);
    String worker = "SDK worker " + workerId + " ";
    for (String notice : notices) {
      if (notice.contains(worker) && notice.contains(" died")) {
        return notice;
      }
    }
    return null;
  }

  /** A worker of the pool, stopped through the pool when the runner lets it go. */
  private static final class Remote extends ConnectedEnvironment {
    private final ManagedChannel channel;
    private final String workerId;

    Remote(
        Environment environment,
        InstructionRequestHandler handler,
        ManagedChannel channel,
        String workerId) {
      super(environment, handler);
      this.channel = channel;
      this.workerId = workerId;
    }

    @Override
    public void close() throws Exception {
      try {
        getInstructionRequestHandler().close();
        BeamFnApi.StopWorkerResponse response =
            BeamFnExternalWorkerPoolGrpc.newBlockingStub(channel)
                .stopWorker(BeamFnApi.StopWorkerRequest.newBuilder().setWorkerId(workerId).build());
        if (!response.getError().isEmpty()) {
          throw new RuntimeException(response.getError());
        }
      } finally {
        channel.shutdown();
        channel.awaitTermination(10, TimeUnit.SECONDS);
        if (!channel.isTerminated()) {
          channel.shutdownNow();
        }
      }
    }
  }

  /** The provider, with the runner's servers on loopback. */
  static final class Provider implements EnvironmentFactory.Provider {
    private final Duration connectTimeout;

    Provider(Duration connectTimeout) {
      this.connectTimeout = connectTimeout;
    }

    @Override
    public EnvironmentFactory createEnvironmentFactory(
        GrpcFnServer<FnApiControlClientPoolService> controlServiceServer,
        GrpcFnServer<GrpcLoggingService> loggingServiceServer,
        GrpcFnServer<ArtifactRetrievalService> retrievalServiceServer,
        GrpcFnServer<StaticGrpcProvisionService> provisioningServiceServer,
        ControlClientPool clientPool,
        IdGenerator idGenerator) {
      return new BoundedExternalEnvironmentFactory(
          controlServiceServer,
          loggingServiceServer,
          retrievalServiceServer,
          provisioningServiceServer,
          clientPool.getSource(),
          connectTimeout);
    }

    @Override
    public ServerFactory getServerFactory() {
      return new LoopbackServerFactory();
    }
  }
}
