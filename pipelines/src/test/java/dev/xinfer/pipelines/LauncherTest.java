package dev.xinfer.pipelines;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.stream.IntStream;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class LauncherTest {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  /**
   * The streaming loop prints the live metrics while it reads the predictions back: a read that
   * takes long (the embedded Flink's REST API) must not hold it up.
   */
  @Test
  public void theLatestOfASlowReadNeverWaitsForIt() throws Exception {
    java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
    java.util.concurrent.atomic.AtomicInteger reads =
        new java.util.concurrent.atomic.AtomicInteger();
    try (Launcher.Latest<String> latest =
        new Launcher.Latest<>(
            () -> {
              try {
                release.await();
              } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
              }
              return "read " + reads.incrementAndGet();
            },
            1)) {
      long start = System.nanoTime();
      for (int i = 0; i < 100; i++) {
        assertNull("nothing read yet", latest.get());
      }
      assertTrue(
          "get() does not wait for the read under way",
          System.nanoTime() - start < java.util.concurrent.TimeUnit.SECONDS.toNanos(1));
      release.countDown();
      long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(10);
      while (latest.get() == null && System.nanoTime() < deadline) {
        Thread.sleep(10);
      }
      assertEquals("read 1", latest.get());
    }
  }

  @Test
  public void moreRecordsThanTheInputRepeatItWithNewIds() {
    List<String> input = List.of("0,7,1.0", "1,3,2.0", "4,5,3.0");
    assertEquals(List.of("0,7,1.0", "1,3,2.0"), Launcher.repeated(input, 2));
    assertEquals(
        List.of("0,7,1.0", "1,3,2.0", "4,5,3.0", "5,7,1.0", "6,3,2.0", "9,5,3.0", "10,7,1.0"),
        Launcher.repeated(input, 7));
  }

  @Test
  public void latencyPercentilesAreNearestRank() {
    double[] millis = IntStream.rangeClosed(1, 200).mapToDouble(i -> 201 - i).toArray();
    Launcher.Latency latency = Launcher.Latency.of(millis);
    assertEquals(100.0, latency.p50, 0);
    assertEquals(180.0, latency.p90, 0);
    assertEquals(198.0, latency.p99, 0);
    assertEquals(200.0, latency.max, 0);
    assertEquals("latency_ms(p50=100.0 p90=180.0 p99=198.0 max=200.0)", latency.toString());
    assertNull(Launcher.Latency.of());
  }

  @Test
  public void examplesAreStartupThenWarmupThenSteady() {
    long up = 1_000_000_000L; // the first prediction came back at 1 s
    long warmup = 5_000_000_000L;
    assertEquals(Launcher.STARTUP, Launcher.phase(500, 0, warmup)); // nothing back yet
    assertEquals(Launcher.STARTUP, Launcher.phase(up - 1, up, warmup));
    assertEquals(Launcher.WARMUP, Launcher.phase(up, up, warmup));
    assertEquals(Launcher.WARMUP, Launcher.phase(up + warmup - 1, up, warmup));
    assertEquals(Launcher.STEADY, Launcher.phase(up + warmup, up, warmup));
    assertEquals(Launcher.STEADY, Launcher.phase(up, up, 0)); // no warm-up asked for
  }

  @Test
  public void latencyMillisHaveThreeDecimals() {
    assertEquals("1.234", Launcher.millis(1_234_567));
    assertEquals("0.005", Launcher.millis(5_000));
    assertEquals("12.000", Launcher.millis(12_000_000));
    assertEquals("-0.250", Launcher.millis(-250_000));
  }

  @Test
  public void badStreamingFlagsNameTheFlagAndTheFix() {
    for (String[] bad :
        new String[][] {
          {"--rate=0", "--rate=0 is not a rate"},
          {"--records=-3", "--records=-3: give at least 1"},
          {"--warmupSeconds=-1", "--warmupSeconds=-1: give 0 or more seconds"}
        }) {
      Launcher.Options options = PipelineOptionsFactory.fromArgs(bad[0]).as(Launcher.Options.class);
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> Launcher.checkStreamingFlags(options));
      assertTrue(e.getMessage(), e.getMessage().startsWith(bad[1]));
    }
    Launcher.checkStreamingFlags(PipelineOptionsFactory.create().as(Launcher.Options.class));
  }

  @Test
  public void deliveriesCountDuplicatesAndDeadLettersOncePerRecord() {
    Launcher.Deliveries d = new Launcher.Deliveries(RecordIds.of(List.of("1,x", "2,y", "oops")));
    assertTrue(d.add(true, 1L, "1,a"));
    assertTrue(!d.add(true, 1L, "1,a")); // a replay's second prediction
    assertTrue(d.add(false, 2L, "{dead}"));
    assertTrue(!d.add(false, 2L, "{dead}"));
    assertTrue(!d.add(true, 2L, "2,b")); // a record is a prediction or a dead letter, once
    assertTrue(d.add(false, null, "{no id}"));
    // An id the run never sent counts once too.
    assertTrue(d.add(true, 99L, "99,c"));
    assertTrue(!d.add(false, 99L, "{dead}"));
    assertEquals(2, d.predictions);
    assertEquals(2, d.deadLetters());
    assertEquals(4, d.duplicates);
    assertEquals(4, d.accountedFor());
    assertEquals("{dead}", d.firstDeadLetter);
  }

  @Test
  public void recordIdsArePositionsAmongTheDistinctNumericIds() {
    RecordIds ids = RecordIds.of(List.of("30,a", "10,b", "bad,c", "20,d", "10,e", "40"));
    assertEquals(4, ids.size());
    assertEquals(0, ids.indexOf(10));
    assertEquals(1, ids.indexOf(20));
    assertEquals(3, ids.indexOf(40));
    assertEquals(RecordIds.UNKNOWN, ids.indexOf(25));
  }

  @Test
  public void predictionsAsTheyArrivedAreWrittenInTheOrderOfTheirIds() throws Exception {
    java.nio.file.Path arrived = tmp.newFile("arrived.tmp").toPath();
    java.nio.file.Files.write(arrived, List.of("10,10,7,a", "2,2,3,b", "7,7,1,c"));
    assertEquals(List.of("2,3,b", "7,1,c", "10,7,a"), Launcher.byId(arrived));
    assertTrue("the file of arrivals is gone", !java.nio.file.Files.exists(arrived));
  }

  @Test(timeout = 10_000)
  public void anInterruptedWaitForABatchJobStopsInsteadOfSpinning() throws Exception {
    // A job that never ends: waitUntilFinish(duration) gives null at once in an interrupted
    // thread, as XinferPipelineResult's does.
    java.util.concurrent.atomic.AtomicBoolean cancelled =
        new java.util.concurrent.atomic.AtomicBoolean();
    org.apache.beam.sdk.PipelineResult never =
        new org.apache.beam.sdk.PipelineResult() {
          @Override
          public State getState() {
            return State.RUNNING;
          }

          @Override
          public State cancel() {
            cancelled.set(true);
            return State.CANCELLED;
          }

          @Override
          public State waitUntilFinish(org.joda.time.Duration duration) {
            try {
              Thread.sleep(duration.getMillis());
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
            return null;
          }

          @Override
          public State waitUntilFinish() {
            throw new UnsupportedOperationException();
          }

          @Override
          public org.apache.beam.sdk.metrics.MetricResults metrics() {
            throw new UnsupportedOperationException("no metrics while it runs");
          }
        };
    dev.xinfer.XinferOptions options =
        PipelineOptionsFactory.fromArgs("--runner=FlinkRunner").as(dev.xinfer.XinferOptions.class);
    java.util.concurrent.atomic.AtomicReference<Throwable> thrown =
        new java.util.concurrent.atomic.AtomicReference<>();
    Thread waiter =
        new Thread(
            () -> {
              try {
                Launcher.waitWithProgress(never, options, 1);
              } catch (Throwable t) {
                thrown.set(t);
              }
            });
    waiter.start();
    Thread.sleep(300);
    waiter.interrupt();
    waiter.join(5_000);
    assertTrue("the wait is still going after its thread was interrupted", !waiter.isAlive());
    assertTrue(String.valueOf(thrown.get()), thrown.get() instanceof IllegalStateException);
    assertTrue("the job was not cancelled", cancelled.get());
  }
}
