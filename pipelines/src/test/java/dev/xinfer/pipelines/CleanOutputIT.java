package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * What a user sees when the demo runs: the pipeline in a JVM of its own, as {@code ./xinfer demo}
 * starts it. A run that succeeds prints its summary and no stack trace (Beam's harness teardown
 * reports are kept off the console); a run that fails still says why.
 */
@RunWith(JUnit4.class)
public class CleanOutputIT {
  private static final long RUN_BOUND_SECONDS = 240;

  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(12);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  @Test
  public void aRunThatSucceedsPrintsItsSummaryAndNoStackTraceOnEachRunner() throws Exception {
    for (String runner : List.of("FlinkRunner", "SparkRunner", "DirectRunner")) {
      Run run = launch(runner, Digits.dataset());
      assertEquals(runner + " exit status; output:\n" + run.output, 0, run.exitStatus);
      assertThat(run.output, containsString("records=1797 failed=0"));
      List<String> traces =
          run.output
              .lines()
              .filter(
                  l ->
                      l.startsWith("\tat ")
                          || l.contains("Exception")
                          || l.startsWith("SEVERE")
                          || l.contains("not shutdown properly"))
              .collect(Collectors.toList());
      assertTrue(
          runner + " printed a stack trace or an error on a clean run:\n" + run.output,
          traces.isEmpty());
    }
  }

  @Test
  public void aRunThatFailsStillSaysWhy() throws Exception {
    Path input = tmp.newFile("bad.csv").toPath();
    List<String> lines = new ArrayList<>(Files.readAllLines(Digits.dataset()).subList(0, 4));
    lines.add(lines.get(3).replaceFirst(",([0-9.]+)$", ",abc"));
    Files.write(input, lines, StandardCharsets.UTF_8);
    Run run = launch("FlinkRunner", input);
    assertEquals("exit status; output:\n" + run.output, 1, run.exitStatus);
    assertThat(run.output, containsString("abc"));
  }

  private static final class Run {
    final int exitStatus;
    final String output;

    Run(int exitStatus, String output) {
      this.exitStatus = exitStatus;
      this.output = output;
    }
  }

  /** The demo pipeline's main in a new JVM with this JVM's classpath and the project's flags. */
  private Run launch(String runner, Path input) throws IOException, InterruptedException {
    Path root = Paths.get("").toAbsolutePath();
    Path log = tmp.newFile(runner + ".log").toPath();
    String profile =
        runner.equals("DirectRunner")
            ? "direct"
            : runner.equals("SparkRunner") ? "local-spark" : "local-flink";
    List<String> command =
        new ArrayList<>(
            List.of(
                Paths.get(System.getProperty("java.home"), "bin", "java").toString(),
                "@" + root.resolve("runners-config/java17.args"),
                "-cp",
                System.getProperty("java.class.path"),
                DigitsPipeline.class.getName(),
                "--profile=" + root.resolve("runners-config/" + profile + ".conf"),
                "--runner=" + runner));
    for (String arg :
        DemoRuns.args(input, tmp.getRoot().toPath().resolve(runner).resolve("predictions"))) {
      command.add(arg);
    }
    Process process =
        new ProcessBuilder(command)
            .directory(root.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .start();
    if (!process.waitFor(RUN_BOUND_SECONDS, TimeUnit.SECONDS)) {
      process.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
      throw new AssertionError(
          runner
              + " did not finish within "
              + RUN_BOUND_SECONDS
              + " s; its output:\n"
              + Files.readString(log));
    }
    return new Run(process.exitValue(), Files.readString(log));
  }
}
