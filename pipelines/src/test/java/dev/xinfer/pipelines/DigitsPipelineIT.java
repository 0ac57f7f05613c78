package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline, as {@code ./xinfer demo} runs it: the real file, the real Python services and
 * TensorFlow model, the embedded portable Flink runner; every output is checked.
 */
@RunWith(JUnit4.class)
public class DigitsPipelineIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(6);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private String[] args(Path input, Path output, String... more) {
    return DemoRuns.args(input, output, more);
  }

  @Test
  public void everyRecordIsPredictedAsThePlainPythonModelDoesOnEachRunner() throws Exception {
    for (String[] runner : TestRunners.EMBEDDED) {
      Path output = tmp.getRoot().toPath().resolve(runner[0]).resolve("predictions");
      Launcher.Summary summary =
          DemoRuns.batch(
              output, runner[0], List.of(runner).subList(1, runner.length).toArray(new String[0]));
      assertThat(summary.toString(), containsString("records=1797 failed=0 accuracy="));
      // RunInference's Python metrics, read from the Java PipelineResult.
      assertThat(summary.toString(), containsString("inferences=1797 predictions=1797 failures=0"));
    }
  }

  @Test
  public void aNonNumericPixelFailsTheRunNamingRecordAndColumn() throws Exception {
    Path input = tmp.newFile("bad.csv").toPath();
    List<String> lines = new ArrayList<>(Files.readAllLines(Digits.dataset()).subList(0, 4));
    lines.add(lines.get(3).replaceFirst("^[0-9]+,", "77,").replaceFirst(",([0-9.]+)$", ",abc"));
    Files.write(input, lines, StandardCharsets.UTF_8);
    Exception e =
        assertThrows(
            Exception.class,
            () ->
                Launcher.run(
                    args(input, tmp.getRoot().toPath().resolve("out")),
                    DigitsPipeline.Options.class,
                    DigitsPipeline::build));
    assertThat(e.getMessage(), containsString("Record id=77: field 'features' value 63 ('abc'"));
    assertThat(e.getMessage(), containsString("is not a number"));
  }

  @Test
  public void unsupportedRunnersGetOneClearSentence() {
    for (String runner : List.of("DataflowRunner", "SamzaRunner")) {
      IllegalArgumentException e =
          assertThrows(
              IllegalArgumentException.class,
              () ->
                  Launcher.run(
                      args(Digits.dataset(), tmp.getRoot().toPath(), "--runner=" + runner),
                      DigitsPipeline.Options.class,
                      DigitsPipeline::build));
      assertThat(e.getMessage(), containsString("cannot run on " + runner));
      assertFalse(e.getMessage().contains("Exception"));
    }
  }
}
