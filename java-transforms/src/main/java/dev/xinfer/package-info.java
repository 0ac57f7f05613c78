/**
 * xinfer's public API: {@link dev.xinfer.RunInference} applies a Python model to a {@code
 * PCollection<Row>} in a Java Beam pipeline; {@link dev.xinfer.Model} names the model; {@link
 * dev.xinfer.XinferOptions} are the {@code --xinfer...} flags; {@link dev.xinfer.InferenceMetrics}
 * reads what a run reported.
 *
 * <p>Everything under {@code dev.xinfer.runtime} is internal ({@code @Internal}): it may change in
 * any release.
 */
package dev.xinfer;
