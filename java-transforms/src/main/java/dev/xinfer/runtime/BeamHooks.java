package dev.xinfer.runtime;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentMap;
import org.apache.beam.runners.flink.translation.functions.FlinkExecutableStageContextFactory;
import org.apache.beam.runners.fnexecution.control.ExecutableStageContext;
import org.apache.beam.runners.spark.translation.SparkExecutableStageContextFactory;
import org.apache.beam.sdk.annotations.Internal;

/**
 * Where xinfer's Java side reaches into Beam internals: the one class to read on a Beam upgrade
 * (CONTRIBUTING.md, "Upgrading Beam"). xinfer is built and checked for Beam {@value #BEAM_VERSION}
 * (the one place Java code names it); what comments elsewhere say of Beam's behaviour was read in
 * that version's sources.
 *
 * <ul>
 *   <li>{@link #jobFactories}: the static {@code jobFactories} map of the Flink and Spark runners'
 *       {@code ExecutableStageContextFactory}, where {@link LoopbackFnServers} registers a job's
 *       stage-context factory so that its Fn API servers bind to 127.0.0.1 (Beam's default binds
 *       all interfaces and the runners take no other).
 *   <li>{@link HarnessTeardownNoise}: the reports Beam's embedded Java harness prints at the end of
 *       every job, recognized by their text.
 *   <li>Vendored gRPC ({@code org.apache.beam.vendor.grpc.v1p60p1}), whose version is in the
 *       package name: {@code LoopbackServerFactory}, {@code PythonExpansion}, {@code
 *       PythonStageFn}, {@code CombineLifting}, {@code HarnessTeardownNoise} (a logger name) and
 *       the {@code simplelogger.properties} of both modules.
 *   <li>{@link LoopbackFnServers.Runner}: the Flink and Spark stage-context factories by class name
 *       (a TaskManager or executor may lack one runner's classes).
 * </ul>
 *
 * <p>{@link #problems()} lists the hooks whose target is gone; {@code BeamHooksTest} fails on any,
 * so an upgrade that breaks one fails there, by name, before any pipeline runs.
 */
@Internal
public final class BeamHooks {
  /** The Beam version the hooks were written and checked for (the root pom's beam.version). */
  public static final String BEAM_VERSION = "2.62.0";

  /** The stage-context factories whose static job map {@link #jobFactories} reaches. */
  static final List<Class<?>> STAGE_CONTEXT_FACTORIES =
      List.of(FlinkExecutableStageContextFactory.class, SparkExecutableStageContextFactory.class);

  private BeamHooks() {}

  /** The static map of a runner's stage-context factories by job id. */
  @SuppressWarnings("unchecked")
  static ConcurrentMap<String, ExecutableStageContext.Factory> jobFactories(Class<?> factoryClass) {
    try {
      Field field = factoryClass.getDeclaredField("jobFactories");
      field.setAccessible(true);
      return (ConcurrentMap<String, ExecutableStageContext.Factory>) field.get(null);
    } catch (ReflectiveOperationException | ClassCastException e) {
      throw new IllegalStateException(
          "xinfer cannot reach "
              + factoryClass.getSimpleName()
              + ".jobFactories; this xinfer version is built for Beam "
              + BEAM_VERSION
              + "'s runners.",
          e);
    }
  }

  /** What no longer matches in the Beam on the classpath, one line per hook. */
  public static List<String> problems() {
    List<String> found = new ArrayList<>();
    String version = org.apache.beam.sdk.util.ReleaseInfo.getReleaseInfo().getVersion();
    if (!BEAM_VERSION.equals(version)) {
      found.add("Beam is " + version + "; the hooks were checked for " + BEAM_VERSION);
    }
    for (Class<?> factory : STAGE_CONTEXT_FACTORIES) {
      try {
        jobFactories(factory);
      } catch (IllegalStateException e) {
        found.add(e.getMessage() + " (" + e.getCause() + ")");
      }
    }
    for (LoopbackFnServers.Runner runner : LoopbackFnServers.Runner.values()) {
      if (!runner.isIn(BeamHooks.class.getClassLoader())) {
        found.add(
            "LoopbackFnServers.Runner."
                + runner
                + " names a stage-context factory or parent class that is gone");
      }
    }
    for (String name : HarnessTeardownNoise.SOURCES) {
      try {
        Class.forName(name, false, BeamHooks.class.getClassLoader());
      } catch (ClassNotFoundException e) {
        found.add(
            name
                + " is gone: HarnessTeardownNoise filters reports of a class that no longer exists");
      }
    }
    return found;
  }
}
