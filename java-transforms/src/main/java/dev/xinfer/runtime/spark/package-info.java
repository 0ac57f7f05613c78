/**
 * Internal: the Spark engine of {@code XinferRunner}: local or standalone ({@code --sparkMaster}),
 * the driver on loopback, the Java 17 flags Spark needs, authentication, and the streaming runner
 * ({@code SparkStreamingRunner}) behind {@code --streaming}.
 */
@Internal
package dev.xinfer.runtime.spark;

import org.apache.beam.sdk.annotations.Internal;
