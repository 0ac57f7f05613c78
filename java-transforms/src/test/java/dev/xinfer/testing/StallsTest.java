package dev.xinfer.testing;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.Description;
import org.junit.runners.model.Statement;
import org.junit.runners.model.TestTimedOutException;

public class StallsTest {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private Path reruns() {
    return tmp.getRoot().toPath().resolve("reruns.log");
  }

  private static Statement counting(AtomicInteger runs, Runnable body) {
    return new Statement() {
      @Override
      public void evaluate() {
        runs.incrementAndGet();
        body.run();
      }
    };
  }

  private static final Description TEST = Description.createTestDescription("StallsTest", "t");

  @Test
  public void anAssertionFailureIsNotRerun() {
    AtomicInteger runs = new AtomicInteger();
    Statement failing =
        Stalls.failAfter(10, TimeUnit.SECONDS, reruns())
            .apply(
                counting(
                    runs,
                    () -> {
                      throw new AssertionError("wrong prediction");
                    }),
                TEST);
    assertThrows(AssertionError.class, failing::evaluate);
    assertEquals(1, runs.get());
    assertEquals(false, Files.exists(reruns()));
  }

  @Test
  public void aStallRunsOnceMoreAndAStallAgainFails() {
    AtomicInteger runs = new AtomicInteger();
    Statement stalling =
        Stalls.failAfter(200, TimeUnit.MILLISECONDS, reruns())
            .apply(
                counting(
                    runs,
                    () -> {
                      try {
                        Thread.sleep(5_000);
                      } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                      }
                    }),
                TEST);
    Throwable failure = assertThrows(Throwable.class, stalling::evaluate);
    assertEquals(2, runs.get());
    assertEquals(true, Stalls.isTimeout(failure) || failure instanceof TestTimedOutException);
  }

  @Test
  public void aStallThatPassesOnTheRerunPasses() throws Throwable {
    AtomicInteger runs = new AtomicInteger();
    Stalls.failAfter(200, TimeUnit.MILLISECONDS, reruns())
        .apply(
            counting(
                runs,
                () -> {
                  if (runs.get() == 1) {
                    try {
                      Thread.sleep(5_000);
                    } catch (InterruptedException e) {
                      Thread.currentThread().interrupt();
                    }
                  }
                }),
            TEST)
        .evaluate();
    assertEquals(2, runs.get());
    List<String> recorded = Files.readAllLines(reruns());
    assertEquals(recorded.toString(), 1, recorded.size());
    assertTrue(recorded.get(0), recorded.get(0).startsWith(Stalls.RERUN_PREFIX + "t(StallsTest)"));
  }
}
