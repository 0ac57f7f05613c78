package dev.xinfer;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.util.ArrayList;
import java.util.List;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.transforms.Create;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * A hook that never returns ({@code xinfer.examples.hooks:stall}) under {@code
 * --xinferBundleTimeout}: on each runner the job fails within a bound of the limit instead of
 * hanging, and the failure or the worker pool's warning names the limit and the flag.
 */
@RunWith(JUnit4.class)
public class BundleTimeoutIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(6);

  private static final int LIMIT_SECONDS = 3;

  private static List<String[]> runners() {
    List<String[]> runners = new ArrayList<>(TestRunners.EMBEDDED);
    runners.add(new String[] {"DirectRunner"});
    return runners;
  }

  @Test
  public void aHangingHookFailsTheJobWithinTheLimitOnEachRunner() {
    for (String[] runner : runners()) {
      List<String> flags = new ArrayList<>(List.of(runner).subList(1, runner.length));
      flags.add("--xinferBundleTimeout=" + LIMIT_SECONDS);
      // A batch job: it fails at the first timeout (streaming jobs restart, within a bound).
      Pipeline p = TestRunners.pipeline(runner[0], flags.toArray(new String[0]));
      p.apply(Create.of(Digits.exampleRows(4)).withRowSchema(Digits.EXAMPLE_SCHEMA))
          .apply(
              RunInference.withModel(Digits.model("digits-mlp"))
                  .withPreprocess("xinfer.examples.hooks:stall"));
      long start = System.nanoTime();
      RuntimeException failure =
          assertThrows(runner[0], RuntimeException.class, () -> p.run().waitUntilFinish());
      double seconds = (System.nanoTime() - start) / 1e9;
      String message = messages(failure);
      assertTrue(
          runner[0] + " took " + seconds + " s to fail: " + message, seconds < 10 * LIMIT_SECONDS);
      assertThat(runner[0] + ": " + message, message, containsString("--xinferBundleTimeout"));
    }
  }

  private static String messages(Throwable failure) {
    StringBuilder all = new StringBuilder();
    for (Throwable t = failure; t != null; t = t.getCause()) {
      all.append(t).append('\n');
    }
    return all.toString();
  }
}
