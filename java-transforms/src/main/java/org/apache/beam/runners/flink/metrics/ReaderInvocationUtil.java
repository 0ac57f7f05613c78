/*
 * Licensed to the Apache Software Foundation (ASF) under one
 * or more contributor license agreements.  See the NOTICE file
 * distributed with this work for additional information
 * regarding copyright ownership.  The ASF licenses this file
 * to you under the Apache License, Version 2.0 (the
 * "License"); you may not use this file except in compliance
 * with the License.  You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 */
/*
 * xinfer: a copy of Beam 2.62.0's class of this name (runners/flink, same license) with one change,
 * marked "xinfer:": the reader's metrics go to Flink's metric system at most once a second while
 * records keep coming, not after every record. It takes the place of Beam's on xinfer's classpath
 * (see dev.xinfer.runtime.BeamHooks, which checks that it does).
 */
package org.apache.beam.runners.flink.metrics;

import java.io.Closeable;
import java.io.IOException;
import java.util.concurrent.TimeUnit;
import org.apache.beam.runners.core.metrics.MetricsContainerImpl;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.sdk.io.Source;
import org.apache.beam.sdk.metrics.MetricsEnvironment;
import org.apache.beam.sdk.options.PipelineOptions;

/**
 * Util for invoking {@link Source.Reader} methods that might require a {@link MetricsContainerImpl}
 * to be active. Source.Reader decorator which registers {@link MetricsContainerImpl}. It update
 * metrics to Flink metric and accumulator in start and advance.
 *
 * <p>xinfer: Beam's copy pushes the step's metrics to Flink after every record ({@code
 * FlinkMetricContainerBase.updateMetrics} turns every metric of the container into results, filters
 * them by step and names each one again): with KafkaIO's reader that was 11% of the CPU of a
 * streaming job at 18,000 records/s, all of it on the task thread that runs the job's chained
 * operators (JFR), and the job could not keep up with 20,000 records/s. Here the reader's metrics
 * are still counted at every record (in the container); they reach Flink's metrics at the start,
 * whenever the reader has no record, and at most {@link #PUSH_INTERVAL_NANOS} apart in between, so
 * Flink's view of them is at most a second old. The pipeline result's metrics read the container
 * itself, at the job's end, and are exact.
 */
public class ReaderInvocationUtil<OutputT, ReaderT extends Source.Reader<OutputT>> {

  /** xinfer: the longest time the reader's metrics in Flink lag the reader's own. */
  static final long PUSH_INTERVAL_NANOS = TimeUnit.SECONDS.toNanos(1);

  private final String stepName;
  private final FlinkMetricContainerBase container;
  private final Boolean enableMetrics;
  private long lastPushNanos = System.nanoTime();

  public ReaderInvocationUtil(
      String stepName, PipelineOptions options, FlinkMetricContainerBase container) {
    FlinkPipelineOptions flinkPipelineOptions = options.as(FlinkPipelineOptions.class);
    this.stepName = stepName;
    this.enableMetrics = !flinkPipelineOptions.getDisableMetrics();
    this.container = container;
  }

  public boolean invokeStart(ReaderT reader) throws IOException {
    if (enableMetrics) {
      try (Closeable ignored =
          MetricsEnvironment.scopedMetricsContainer(container.getMetricsContainer(stepName))) {
        boolean result = reader.start();
        push();
        return result;
      }
    } else {
      return reader.start();
    }
  }

  public boolean invokeAdvance(ReaderT reader) throws IOException {
    if (enableMetrics) {
      try (Closeable ignored =
          MetricsEnvironment.scopedMetricsContainer(container.getMetricsContainer(stepName))) {
        boolean result = reader.advance();
        // xinfer: Beam's pushes here after every record.
        if (!result || System.nanoTime() - lastPushNanos >= PUSH_INTERVAL_NANOS) {
          push();
        }
        return result;
      }
    } else {
      return reader.advance();
    }
  }

  private void push() {
    container.updateMetrics(stepName);
    lastPushNanos = System.nanoTime();
  }
}
