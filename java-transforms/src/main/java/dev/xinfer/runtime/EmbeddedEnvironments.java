package dev.xinfer.runtime;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.beam.fn.harness.Caches;
import org.apache.beam.fn.harness.FnHarness;
import org.apache.beam.model.pipeline.v1.RunnerApi.Environment;
import org.apache.beam.model.pipeline.v1.RunnerApi.StandardRunnerProtocols;
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
import org.apache.beam.sdk.fn.server.InProcessServerFactory;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.sdk.fn.stream.OutboundObserverFactory;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.CallOptions;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Channel;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ClientCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ClientInterceptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.MethodDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The EMBEDDED environment (Java stages run by an in-process Java SDK harness), as Beam's {@code
 * EmbeddedEnvironmentFactory}, with two workarounds: the runner gets the harness only once it
 * answers ({@link #awaitAnswering}: Beam's harness could drop its first answers, and the runner
 * then waited for ever), and an environment's close also shuts down the gRPC channels its harness
 * opened.
 *
 * <p>Beam's harness never shuts its control, data and state channels down, and each open channel
 * holds gRPC's shared timer, whose thread then lives for the JVM's life. On a TaskManager, where
 * each job's Beam and gRPC classes live in a class loader of that job alone, that thread held every
 * finished job's class loader, about 40 MB of metaspace per job (found with {@code ./xinfer soak}
 * and a heap dump). Closing the channels releases the timer, whose thread then ends.
 */
final class EmbeddedEnvironments implements EnvironmentFactory {
  private static final Logger LOG = LoggerFactory.getLogger(EmbeddedEnvironments.class);

  /** How long an environment's close waits for its harness to return before shutting channels. */
  static final Duration HARNESS_EXIT_WAIT = Duration.ofSeconds(10);

  private final PipelineOptions options;
  private final GrpcFnServer<GrpcLoggingService> loggingServer;
  private final GrpcFnServer<FnApiControlClientPoolService> controlServer;
  private final ControlClientPool.Source clients;

  private EmbeddedEnvironments(
      PipelineOptions options,
      GrpcFnServer<GrpcLoggingService> loggingServer,
      GrpcFnServer<FnApiControlClientPoolService> controlServer,
      ControlClientPool.Source clients) {
    this.options = options;
    this.loggingServer = loggingServer;
    this.controlServer = controlServer;
    this.clients = clients;
  }

  @Override
  public RemoteEnvironment createEnvironment(Environment environment, String workerId)
      throws Exception {
    Channels channels = new Channels();
    ExecutorService thread =
        DaemonThreads.singleThreadExecutor("xinfer-embedded-harness-" + workerId);
    Future<?> harness =
        thread.submit(
            () -> {
              FnHarness.main(
                  workerId,
                  options,
                  Collections.singleton(
                      BeamUrns.getUrn(
                          StandardRunnerProtocols.Enum.CONTROL_RESPONSE_ELEMENTS_EMBEDDING)),
                  loggingServer.getApiServiceDescriptor(),
                  controlServer.getApiServiceDescriptor(),
                  null,
                  ManagedChannelFactory.createInProcess().withInterceptors(List.of(channels)),
                  OutboundObserverFactory.clientDirect(),
                  Caches.fromOptions(options));
              return null;
            });
    // The thread ends with the harness.
    thread.shutdown();
    InstructionRequestHandler handler = null;
    while (handler == null) {
      if (harness.isDone()) {
        channels.shutdown();
        throw new IllegalStateException(
            "the embedded Java SDK harness "
                + workerId
                + " ended before it connected to the runner: "
                + failure(harness)
                + " (the Java stages need beam-sdks-java-harness "
                + BeamHooks.BEAM_VERSION
                + " on the classpath)");
      }
      try {
        handler = clients.take(workerId, Duration.ofSeconds(5));
      } catch (TimeoutException e) {
        LOG.info("Still waiting for the embedded Java SDK harness {} to connect", workerId);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        harness.cancel(true);
        channels.shutdown();
        throw e;
      }
    }
    InstructionRequestHandler connected = handler;
    try {
      awaitAnswering(connected, workerId, harness);
    } catch (RuntimeException | InterruptedException e) {
      connected.close();
      channels.shutdown();
      throw e;
    }
    return new ConnectedEnvironment(environment, connected) {
      @Override
      public void close() throws Exception {
        try {
          // Ends the control stream, on which the harness returns.
          connected.close();
          harness.get(HARNESS_EXIT_WAIT.toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
          LOG.debug(
              "the embedded Java SDK harness {} had not returned {} after its environment closed",
              workerId,
              HARNESS_EXIT_WAIT);
        } catch (ExecutionException e) {
          LOG.debug("the embedded Java SDK harness {} ended with {}", workerId, e.getCause());
        } finally {
          channels.shutdown();
        }
      }
    };
  }

  /** How long a harness may take to answer its first request before its start is a failure. */
  static final Duration ANSWER_WAIT = Duration.ofSeconds(60);

  /**
   * How long, once one request is answered, the runner waits for the answers of the requests before
   * it, which a harness that was only slow sends late.
   */
  static final Duration LATE_ANSWER_WAIT = Duration.ofMillis(250);

  /**
   * Returns once the harness answers a request: until then, the runner must send it nothing.
   * Returns the ids of the requests whose answer was dropped.
   *
   * <p>Beam's harness can answer only once its {@code BeamFnControlClient} constructor has returned
   * (it sets the outbound stream there), but the control stream opens inside that constructor, the
   * runner sends its first bundles as soon as it opens, and the in-process stream hands them to the
   * harness at once: a bundle that finished before the constructor returned was processed, but its
   * answer was dropped (a null outbound stream, in a task whose exception nobody reads), and the
   * runner waited for it for ever. That was the "embedded-harness stall" (about one job in ten in a
   * JVM running job after job; seen with Beam's own embedded environment too). A no-op request
   * (harness monitoring infos), sent again until one is answered, holds the runner's first bundle
   * until the harness can answer it. A request not answered in time may only be late (a harness
   * starting on a busy machine): its answer is awaited a little longer ({@link #LATE_ANSWER_WAIT})
   * before it is counted as dropped, so that Beam does not log a late answer as unknown.
   */
  static List<String> awaitAnswering(
      InstructionRequestHandler handler, String workerId, Future<?> harness)
      throws InterruptedException {
    long deadline = System.nanoTime() + ANSWER_WAIT.toNanos();
    Map<String, Future<?>> unanswered = new LinkedHashMap<>();
    for (int attempt = 1; ; attempt++) {
      String id = "xinfer-ready-" + attempt;
      java.util.concurrent.CompletableFuture<?> answer =
          handler
              .handle(
                  org.apache.beam.model.fnexecution.v1.BeamFnApi.InstructionRequest.newBuilder()
                      .setInstructionId(id)
                      .setHarnessMonitoringInfos(
                          org.apache.beam.model.fnexecution.v1.BeamFnApi
                              .HarnessMonitoringInfosRequest.getDefaultInstance())
                      .build())
              .toCompletableFuture();
      try {
        answer.get(Math.min(20L * attempt, 500L), TimeUnit.MILLISECONDS);
        return forgetDropped(handler, unanswered);
      } catch (ExecutionException e) {
        // An answer, if an error: the harness can answer.
        return forgetDropped(handler, unanswered);
      } catch (TimeoutException e) {
        unanswered.put(id, answer);
        if (harness.isDone() || System.nanoTime() - deadline > 0) {
          throw new IllegalStateException(
              "the embedded Java SDK harness "
                  + workerId
                  + " connected but answered no request in "
                  + ANSWER_WAIT.toSeconds()
                  + " s"
                  + (harness.isDone() ? ": it ended (" + failure(harness) + ")" : ""),
              e);
        }
      }
    }
  }

  /**
   * Forgets the requests of {@code unanswered} whose answer has not come within {@link
   * #LATE_ANSWER_WAIT}: they would stay outstanding, and Beam reports those as an error when the
   * environment closes. Returns their ids.
   */
  private static List<String> forgetDropped(
      InstructionRequestHandler handler, Map<String, Future<?>> unanswered)
      throws InterruptedException {
    long deadline = System.nanoTime() + LATE_ANSWER_WAIT.toNanos();
    List<String> dropped = new ArrayList<>();
    for (Map.Entry<String, Future<?>> request : unanswered.entrySet()) {
      try {
        request.getValue().get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      } catch (ExecutionException e) {
        // Answered, with an error.
      } catch (TimeoutException e) {
        dropped.add(request.getKey());
      }
    }
    BeamHooks.forgetRequests(handler, dropped);
    return dropped;
  }

  private static String failure(Future<?> harness) {
    try {
      harness.get();
      return "it returned";
    } catch (ExecutionException e) {
      return String.valueOf(e.getCause());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return "interrupted";
    }
  }

  /**
   * The channels a harness makes calls on, seen by an interceptor (the one way in: Beam's {@link
   * ManagedChannelFactory} builds them itself), shut down with {@link BeamHooks#shutdownChannel}.
   */
  static final class Channels implements ClientInterceptor {
    private final Set<Channel> seen = ConcurrentHashMap.newKeySet();

    @Override
    public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
        MethodDescriptor<ReqT, RespT> method, CallOptions callOptions, Channel next) {
      seen.add(next);
      return next.newCall(method, callOptions);
    }

    /** Shuts down every channel seen; returns how many. */
    int shutdown() {
      int shut = 0;
      for (Channel channel : seen) {
        if (BeamHooks.shutdownChannel(channel)) {
          shut++;
        }
      }
      seen.clear();
      return shut;
    }
  }

  /** Provides {@link EmbeddedEnvironments}, on in-process Fn API servers as Beam's provider. */
  static final class Provider implements EnvironmentFactory.Provider {
    private final PipelineOptions options;

    Provider(PipelineOptions options) {
      this.options = options;
    }

    @Override
    public EnvironmentFactory createEnvironmentFactory(
        GrpcFnServer<FnApiControlClientPoolService> controlServer,
        GrpcFnServer<GrpcLoggingService> loggingServer,
        GrpcFnServer<ArtifactRetrievalService> retrievalServer,
        GrpcFnServer<StaticGrpcProvisionService> provisioningServer,
        ControlClientPool clientPool,
        IdGenerator idGenerator) {
      return new EmbeddedEnvironments(
          options, loggingServer, controlServer, clientPool.getSource());
    }

    @Override
    public ServerFactory getServerFactory() {
      return InProcessServerFactory.create();
    }
  }
}
