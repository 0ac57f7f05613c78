package dev.xinfer.runtime.portable;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.LoopbackFnServers;
import java.util.List;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsRegistrar;

/**
 * Registers {@link XinferOptions}, so that {@code --xinfer...} flags parse in any Beam pipeline;
 * loading it also registers loopback Fn API servers for cluster jobs.
 *
 * <p>Beam loads the registrars when it first reads pipeline options in a class loader: on a Flink
 * TaskManager or Spark executor, when a job's stage functions are deserialized, before any of them
 * opens. That is the one point where xinfer's code runs there before Beam builds the Fn API servers
 * for the job's Python stages, which Beam binds to all interfaces (see {@link LoopbackFnServers}).
 */
@Internal
public final class XinferOptionsRegistrar implements PipelineOptionsRegistrar {
  static {
    LoopbackFnServers.registerClusterJobs();
  }

  @Override
  public Iterable<Class<? extends PipelineOptions>> getPipelineOptions() {
    return List.of(XinferOptions.class);
  }
}
