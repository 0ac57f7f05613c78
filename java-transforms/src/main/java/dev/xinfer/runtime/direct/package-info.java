/**
 * Internal: the DirectRunner path. The DirectRunner cannot run a cross-language transform, so
 * {@link dev.xinfer.runtime.direct.DirectStage} runs the expanded Python stage inside a Java DoFn,
 * over the same worker pool and loopback Fn API servers the other runners use.
 */
@Internal
package dev.xinfer.runtime.direct;

import org.apache.beam.sdk.annotations.Internal;
