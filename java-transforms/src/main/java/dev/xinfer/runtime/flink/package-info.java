/**
 * Internal: the Flink engine of {@code XinferRunner}: the embedded mini-cluster or a standalone
 * cluster ({@code --flinkMaster}), its configuration (loopback binds, TLS client settings) and job
 * cancellation.
 */
@Internal
package dev.xinfer.runtime.flink;

import org.apache.beam.sdk.annotations.Internal;
