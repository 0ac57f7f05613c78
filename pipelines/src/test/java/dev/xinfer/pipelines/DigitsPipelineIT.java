package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.TestRunners;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * The demo pipeline, as {@code ./xinfer demo} runs it: the real file, the real Python services and
 * TensorFlow model, the embedded portable Flink runner; every output is checked.
 */
@RunWith(JUnit4.class)
public class DigitsPipelineIT {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private String[] args(Path input, Path output, String... more) {
    List<String> args =
        new ArrayList<>(
            List.of(
                "--input=" + input,
                "--output=" + output,
                "--modelUri=" + Digits.model(),
                "--xinferPython=" + System.getProperty("xinfer.python")));
    args.addAll(List.of(more));
    return args.toArray(new String[0]);
  }

  @Test
  public void everyRecordIsPredictedAsThePlainPythonModelDoesOnEachRunner() throws Exception {
    for (String[] runner : TestRunners.EMBEDDED) {
      checkRun(runner);
    }
  }

  private void checkRun(String[] runner) throws Exception {
    String name = runner[0];
    Path output = tmp.getRoot().toPath().resolve(name).resolve("predictions");
    List<String> flags = new ArrayList<>(List.of(runner).subList(1, runner.length));
    flags.add("--runner=" + name);
    Launcher.Summary summary =
        Launcher.run(
            args(Digits.dataset(), output, flags.toArray(new String[0])),
            DigitsPipeline.Options.class,
            DigitsPipeline::build);

    Map<Long, Digits.Expected> reference = Digits.reference();
    Set<Long> seen = new HashSet<>();
    for (Path shard : Launcher.outputShards(output.toString())) {
      for (String line : Files.readAllLines(shard, StandardCharsets.UTF_8)) {
        String[] cells = line.split(",");
        long id = Long.parseLong(cells[0]);
        assertTrue(name + ": duplicate prediction for " + id, seen.add(id));
        Digits.Expected expected = reference.get(id);
        assertEquals(
            name + ": class of record " + id, expected.predictedClass, Long.parseLong(cells[2]));
        assertEquals(Digits.MODEL_NAME, cells[3]);
        List<Float> scores = new ArrayList<>();
        for (int i = 4; i < cells.length; i++) {
          scores.add(Float.parseFloat(cells[i]));
        }
        assertTrue(name + ": scores of record " + id, Digits.sameScores(expected.scores, scores));
      }
    }
    assertEquals(name + ": one prediction per record", reference.keySet(), seen);
    assertEquals(1797, summary.records);
    assertEquals(0, summary.failed());
    assertTrue(name + ": accuracy " + summary.accuracy(), summary.accuracy() >= 0.9);
    assertThat(summary.toString(), containsString("records=1797 failed=0 accuracy="));
    assertThat(
        summary.toString(), containsString("runner=" + name + " mode=batch model=digits-mlp"));
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
    for (String runner : List.of("DirectRunner", "DataflowRunner")) {
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
