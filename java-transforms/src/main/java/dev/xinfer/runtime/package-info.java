/**
 * Internal: how xinfer runs a Python transform inside a Java pipeline. Not for users; may change in
 * any release.
 *
 * <table>
 *   <caption>The runtime's packages</caption>
 *   <tr><th>package</th><th>what is in it</th></tr>
 *   <tr><td>{@code runtime}</td><td>what the engines share: {@link
 *       dev.xinfer.runtime.RunnerBootstrap} (picks the path for {@code --runner}), loopback Fn API
 *       servers ({@link dev.xinfer.runtime.LoopbackFnServers}), {@link
 *       dev.xinfer.runtime.BeamHooks} (every reach into Beam internals: read it on a Beam
 *       upgrade), the harness teardown filter, private temp folders, cluster jars</td></tr>
 *   <tr><td>{@code runtime.python}</td><td>the Python side seen from Java: the services xinfer
 *       starts, the expansion call with its secret, the row blocks</td></tr>
 *   <tr><td>{@code runtime.direct}</td><td>the DirectRunner path: the Python stage in a Java
 *       DoFn</td></tr>
 *   <tr><td>{@code runtime.portable}</td><td>{@code XinferRunner}: Flink and Spark through Beam's
 *       portable runners in this JVM, and the {@code Engine} contract they fill</td></tr>
 *   <tr><td>{@code runtime.flink}, {@code runtime.spark}</td><td>one engine each</td></tr>
 * </table>
 */
@Internal
package dev.xinfer.runtime;

import org.apache.beam.sdk.annotations.Internal;
