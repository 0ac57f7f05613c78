/**
 * Internal: Flink and Spark through Beam's portable runners, in this JVM. {@link
 * dev.xinfer.runtime.portable.XinferRunner} takes the place of {@code --runner=FlinkRunner} or
 * {@code --runner=SparkRunner}, translates the pipeline to its portable form and runs it on an
 * {@link dev.xinfer.runtime.portable.Engine} (packages {@code runtime.flink}, {@code
 * runtime.spark}); {@link dev.xinfer.runtime.portable.XinferOptionsRegistrar} registers xinfer's
 * flags and, on a TaskManager or executor, the loopback Fn API servers.
 */
@Internal
package dev.xinfer.runtime.portable;

import org.apache.beam.sdk.annotations.Internal;
