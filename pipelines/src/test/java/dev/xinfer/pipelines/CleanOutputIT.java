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
import org.junit.runners.model.TestTimedOutException;

/**
 * What a user sees when the demo runs: the pipeline in a JVM of its own, as {@code ./xinfer demo}
 * starts it. A run that succeeds prints its summary and no stack trace (Beam's harness teardown
 * reports are kept off the console); a run that fails still says why. A launcher that hangs has its
 * threads printed and counts as a stall ({@link Stalls}).
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
      // The offending lines lead the message: Maven's summary shows a failure's first line only.
      assertTrue(
          runner
              + " printed a stack trace or an error on a clean run: "
              + String.join(" | ", traces.subList(0, Math.min(traces.size(), 5)))
              + "\nits whole output:\n"
              + run.output,
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

  /** The JVM's thread dump by {@code jcmd}, so that a hung run shows where it waits. */
  private static String threadDump(long pid) {
    Path jcmd = Paths.get(System.getProperty("java.home"), "bin", "jcmd");
    try {
      Process dump =
          new ProcessBuilder(jcmd.toString(), Long.toString(pid), "Thread.print")
              .redirectErrorStream(true)
              .start();
      byte[] out = dump.getInputStream().readAllBytes();
      dump.waitFor(30, TimeUnit.SECONDS);
      return new String(out, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(no thread dump: " + jcmd + " failed: " + e + ")";
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return "(no thread dump: interrupted)";
    }
  }

  /** The demo pipeline's main in a new JVM with this JVM's classpath and the project's flags. */
  private Run launch(String runner, Path input) throws Exception {
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
      // A hung launcher is a stall: its threads and output are printed, and the test fails as a
      // timed-out one, which the stall guard runs once more and reports (see Stalls).
      String threads = threadDump(process.pid());
      process.descendants().forEach(ProcessHandle::destroyForcibly);
      process.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
      System.out.println(
          "xinfer: the "
              + runner
              + " launcher did not finish within "
              + RUN_BOUND_SECONDS
              + " s; its threads:\n"
              + threads
              + "\nits output:\n"
              + Files.readString(log));
      throw new TestTimedOutException(RUN_BOUND_SECONDS, TimeUnit.SECONDS);
    }
    return new Run(process.exitValue(), Files.readString(log));
  }
}
