package org.apache.beam.runners.flink.metrics;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.util.NoSuchElementException;
import org.apache.beam.runners.flink.FlinkPipelineOptions;
import org.apache.beam.sdk.io.BoundedSource;
import org.apache.beam.sdk.metrics.Counter;
import org.apache.beam.sdk.metrics.MetricName;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.flink.metrics.groups.UnregisteredMetricsGroup;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** xinfer's copy of ReaderInvocationUtil: a reader's metrics reach Flink, but not per record. */
@RunWith(JUnit4.class)
public class ReaderInvocationUtilTest {
  private static final String STEP = "read";

  /** Counts the pushes to Flink's metrics; each is Beam's real one. */
  static final class CountingContainer extends FlinkMetricContainerBase {
    int pushes;

    CountingContainer() {
      super(new UnregisteredMetricsGroup());
    }

    @Override
    void updateMetrics(String stepName) {
      pushes++;
      super.updateMetrics(stepName);
    }
  }

  /** A reader of {@code records} records that counts each in a Beam counter. */
  static final class CountingReader extends BoundedSource.BoundedReader<Long> {
    private final Counter read = Metrics.counter("test", "records");
    private final long records;
    private long current = -1;

    CountingReader(long records) {
      this.records = records;
    }

    @Override
    public boolean start() {
      return advance();
    }

    @Override
    public boolean advance() {
      if (current + 1 >= records) {
        return false;
      }
      current++;
      read.inc();
      return true;
    }

    @Override
    public Long getCurrent() {
      if (current < 0) {
        throw new NoSuchElementException();
      }
      return current;
    }

    @Override
    public void close() {}

    @Override
    public BoundedSource<Long> getCurrentSource() {
      throw new UnsupportedOperationException();
    }
  }

  private static long counted(CountingContainer container) {
    return container
        .getMetricsContainer(STEP)
        .getCounter(MetricName.named("test", "records"))
        .getCumulative();
  }

  @Test
  public void metricsReachFlinkAtStartAtAnIdleReaderAndOncePerIntervalNotPerRecord()
      throws IOException, InterruptedException {
    CountingContainer container = new CountingContainer();
    ReaderInvocationUtil<Long, CountingReader> invoker =
        new ReaderInvocationUtil<>(
            STEP, PipelineOptionsFactory.as(FlinkPipelineOptions.class), container);
    CountingReader reader = new CountingReader(10_001);
    assertTrue(invoker.invokeStart(reader));
    assertEquals(1, container.pushes);
    for (int i = 0; i < 5_000; i++) {
      assertTrue(invoker.invokeAdvance(reader));
    }
    // Every record counted, none pushed (Beam's copy pushes 5,000 times here).
    assertEquals(5_001, counted(container));
    assertEquals(1, container.pushes);
    Thread.sleep(ReaderInvocationUtil.PUSH_INTERVAL_NANOS / 1_000_000 + 50);
    assertTrue(invoker.invokeAdvance(reader));
    assertEquals("a second on, the next record pushes", 2, container.pushes);
    for (int i = 0; i < 4_999; i++) {
      assertTrue(invoker.invokeAdvance(reader));
    }
    assertEquals(2, container.pushes);
    assertFalse(invoker.invokeAdvance(reader));
    assertEquals("a reader without a record pushes what it counted", 3, container.pushes);
    assertEquals(10_001, counted(container));
  }

  @Test
  public void disabledMetricsAreNeitherScopedNorPushed() throws IOException {
    CountingContainer container = new CountingContainer();
    FlinkPipelineOptions options = PipelineOptionsFactory.as(FlinkPipelineOptions.class);
    options.setDisableMetrics(true);
    ReaderInvocationUtil<Long, CountingReader> invoker =
        new ReaderInvocationUtil<>(STEP, options, container);
    CountingReader reader = new CountingReader(3);
    assertTrue(invoker.invokeStart(reader));
    assertTrue(invoker.invokeAdvance(reader));
    assertTrue(invoker.invokeAdvance(reader));
    assertFalse(invoker.invokeAdvance(reader));
    assertEquals(0, container.pushes);
    assertEquals(0, counted(container));
  }
}
