package dev.xinfer.pipelines.bench;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.util.List;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** How the benchmark measures approaches together (the measuring itself is ./xinfer bench's). */
@RunWith(JUnit4.class)
public class BenchTest {
  @Test
  public void eachRoundStartsOneApproachLaterSoEachIsFirstOnce() {
    assertEquals(List.of(0, 1, 2), Bench.roundOrder(3, 0));
    assertEquals(List.of(1, 2, 0), Bench.roundOrder(3, 1));
    assertEquals(List.of(2, 0, 1), Bench.roundOrder(3, 2));
    assertEquals(List.of(0), Bench.roundOrder(1, 2));
  }

  @Test
  public void rowsAreOneNumberForAllOrOnePerApproach() {
    assertEquals(List.of(1000L, 1000L, 1000L), Bench.rowsPerApproach("1000", 3));
    assertEquals(List.of(1000L, 500L), Bench.rowsPerApproach("1000,500", 2));
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> Bench.rowsPerApproach("1000,500", 3));
    assertThat(e.getMessage(), containsString("one per approach (3)"));
  }

  @Test
  public void plainPythonsLineGivesItsSecondsRateAndPeak() {
    double[] loop =
        Bench.plainPythonLine(
            "plain-python,none,wide-mlp.onnx,256,40000,,2.050,19512.2,19512.2,19512.2,,350");
    assertEquals(2.050, loop[0], 1e-9);
    assertEquals(19512.2, loop[1], 1e-9);
    assertEquals(350, loop[2], 1e-9);
    IllegalStateException e =
        assertThrows(IllegalStateException.class, () -> Bench.plainPythonLine("Traceback (most"));
    assertThat(e.getMessage(), containsString("not a line of plain-python"));
  }
}
