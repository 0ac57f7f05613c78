/**
 * Internal: the Python side as Java sees it. {@link dev.xinfer.runtime.python.PythonServices}
 * starts the expansion service and worker pool of a run (with its {@link
 * dev.xinfer.runtime.python.ServiceSecret}); {@link dev.xinfer.runtime.python.PythonExpansion}
 * makes the expansion call with that secret; {@link dev.xinfer.runtime.python.PythonTransforms}
 * expands RunInference's Python transform and names its outputs, for every runner; {@link
 * dev.xinfer.runtime.python.RowBlocks} packs rows into blocks and back (Python's {@code
 * xinfer.blocks}).
 */
@Internal
package dev.xinfer.runtime.python;

import org.apache.beam.sdk.annotations.Internal;
