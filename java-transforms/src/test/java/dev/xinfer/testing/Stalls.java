package dev.xinfer.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.TimeUnit;
import org.junit.rules.TestRule;
import org.junit.rules.Timeout;
import org.junit.runners.model.MultipleFailureException;
import org.junit.runners.model.Statement;
import org.junit.runners.model.TestTimedOutException;

/**
 * A bound on each integration test, so that a stalled job fails its test instead of holding the
 * whole IT JVM until its fork timeout; a test that stalls (and only one that stalls) runs once more
 * in the same JVM, and the rerun is printed in the build's output and in {@code ./xinfer test}'s
 * summary.
 *
 * <p>Why: in a JVM that has run many embedded portable jobs, about one job in 50 stalls (seen on
 * Flink and Spark, the Beam of BeamHooks.BEAM_VERSION): a Java stage's bundle on the EMBEDDED SDK
 * harness waits for input data that the runner has sent ({@code ProcessBundleHandler.processBundle}
 * in {@code BeamFnDataInboundObserver.awaitCompletion}, while the runner waits in {@code
 * ActiveBundle.close}). Reproduced in one JVM with runs of one small Flink pipeline (stalled at run
 * 11, 32, 60 of 80), also without xinfer's loopback Fn API registration, and also with a pipeline
 * that has no Python transform at all ({@code Create}, {@code Filter}, {@code PAssert}: stalled at
 * run 51): the stall is in Beam's portable Flink runner with its EMBEDDED Java harness, not in
 * xinfer's Python path. Cause found (2026-12-06): the harness dropped the answer of a bundle that
 * finished while its control client was still being built; {@code
 * EmbeddedEnvironments.awaitAnswering} holds the runner until the harness answers. The bound and
 * the single rerun stay as a net. A stall shows as a timeout with the stuck threads named, and as a
 * printed rerun: it is not hidden.
 */
public final class Stalls {
  /** Where each rerun is recorded (the project's root is the ITs' working directory). */
  public static final Path RERUNS = Path.of(".xinfer", "stall-reruns.log");

  /** The prefix of the line each rerun prints, which {@code ./xinfer test} repeats at its end. */
  public static final String RERUN_PREFIX = "xinfer-stall-rerun: ";

  private Stalls() {}

  /**
   * At most {@code minutes} per test; a test that runs out of time (the stall's signature) runs
   * once more, printed and recorded ({@link #RERUNS}); any other failure (an assertion, an
   * exception) fails at once, without a rerun.
   */
  public static TestRule failAfterMinutes(int minutes) {
    return failAfter(minutes, TimeUnit.MINUTES, RERUNS);
  }

  static TestRule failAfter(long amount, TimeUnit unit, Path reruns) {
    Timeout timeout =
        Timeout.builder().withTimeout(amount, unit).withLookingForStuckThread(true).build();
    return (base, description) ->
        new Statement() {
          @Override
          public void evaluate() throws Throwable {
            try {
              timeout.apply(base, description).evaluate();
            } catch (Throwable failure) {
              if (!isTimeout(failure)) {
                throw failure;
              }
              String line =
                  String.format(
                      "%s%s timed out (the test's bound is %d %s; a step may have a bound of its"
                          + " own; see dev.xinfer.testing.Stalls; %s); running it once more",
                      RERUN_PREFIX,
                      description.getDisplayName(),
                      amount,
                      unit.toString().toLowerCase(java.util.Locale.ROOT),
                      failure);
              System.out.println(line);
              System.err.println(line);
              record(reruns, line);
              timeout.apply(base, description).evaluate();
            }
          }
        };
  }

  static boolean isTimeout(Throwable failure) {
    if (failure instanceof TestTimedOutException) {
      return true;
    }
    return failure instanceof MultipleFailureException
        && ((MultipleFailureException) failure)
            .getFailures().stream().anyMatch(f -> f instanceof TestTimedOutException);
  }

  private static synchronized void record(Path reruns, String line) {
    try {
      Files.createDirectories(reruns.toAbsolutePath().getParent());
      Files.writeString(
          reruns,
          line + System.lineSeparator(),
          StandardCharsets.UTF_8,
          StandardOpenOption.CREATE,
          StandardOpenOption.APPEND);
    } catch (IOException e) {
      System.err.println("xinfer: could not record the rerun in " + reruns + ": " + e);
    }
  }
}
