package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.util.Collections;
import java.util.List;
import org.apache.beam.sdk.values.Row;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

@RunWith(JUnit4.class)
public class DigitsPipelineTest {
  @Test
  public void parsesALabelledLine() {
    Row row = DigitsPipeline.parse("12,7,0.0,16.0,3.5");
    assertEquals(12L, (long) row.getInt64("id"));
    assertEquals(7L, (long) row.getInt64("label"));
    assertEquals(List.of(0.0f, 16.0f, 3.5f), row.getArray("features"));
  }

  @Test
  public void theFastParseGivesParseFloatsFloats() {
    java.util.Random random = new java.util.Random(7);
    List<String> cells = new java.util.ArrayList<>(List.of("0", "16.0", ".5", "1.", "0.1234567"));
    cells.addAll(List.of("1234567", "12345678", "9.999999", "-3.5", "1e3", "NaN", "0.30000001"));
    for (int i = 0; i < 100_000; i++) {
      int digits = 1 + random.nextInt(7);
      StringBuilder cell = new StringBuilder();
      int point = random.nextInt(digits + 1);
      for (int d = 0; d < digits; d++) {
        cell.append(d == point ? "." : "").append(random.nextInt(10));
      }
      cells.add(cell.toString());
    }
    for (String cell : cells) {
      assertEquals(
          cell,
          Float.floatToIntBits(Float.parseFloat(cell)),
          Float.floatToIntBits(DigitsPipeline.parseFloat(cell)));
    }
    for (String bad : List.of("", ".", "x", "1.2.3")) {
      assertThrows(NumberFormatException.class, () -> DigitsPipeline.parseFloat(bad));
    }
    for (String line : List.of("a,b", "a,,b,", ",", "")) {
      assertEquals(List.of(line.split(",", -1)), DigitsPipeline.cells(line));
    }
  }

  @Test
  public void badCellsNameTheRecordFieldAndValue() {
    assertThat(
        assertThrows(IllegalArgumentException.class, () -> DigitsPipeline.parse("5,1,1.0,,2.0"))
            .getMessage(),
        containsString("Record id=5: field 'features' value 1 ('', column 4) is not a number"));
    assertThat(
        assertThrows(IllegalArgumentException.class, () -> DigitsPipeline.parse("x,1,1.0"))
            .getMessage(),
        containsString("field 'id' is 'x', not a whole number"));
    assertThat(
        assertThrows(IllegalArgumentException.class, () -> DigitsPipeline.parse("5")).getMessage(),
        containsString("has 1 cells; expected id,label,p0,..."));
  }

  @Test
  public void formatsAPrediction() {
    Row prediction =
        Row.withSchema(dev.xinfer.RunInference.outputSchema(DigitsPipeline.EXAMPLE_SCHEMA))
            .addValues(3L, 1L, Collections.nCopies(2, 0f), List.of(0.25f, 0.75f), 1L, "m")
            .build();
    assertEquals("3,1,1,m,0.25,0.75", DigitsPipeline.format(prediction));
  }

  @Test
  public void deadLettersAreJsonWithTheReason() {
    assertEquals(
        "{\"id\":7,\"stage\":\"parsing\",\"error_type\":\"E\",\"error\":\"bad \\\"x\\\"\\u000a\","
            + "\"record\":\"7,1,x\"}",
        DigitsPipeline.deadLetter(7L, "parsing", "E", "bad \"x\"\n", "7,1,x"));
    assertEquals(
        "{\"id\":null,\"stage\":\"parsing\",\"error_type\":\"NullValue\",\"error\":null,"
            + "\"record\":null}",
        DigitsPipeline.deadLetter(null, "parsing", "NullValue", null, null));
  }

  private static boolean exactlyOnce(String... args) {
    return DigitsPipeline.exactlyOnce(
        org.apache.beam.sdk.options.PipelineOptionsFactory.fromArgs(args)
            .as(DigitsPipeline.Options.class));
  }

  @Test
  public void exactlyOnceIsTheDefaultOnFlinkWithCheckpoints() {
    assertEquals(true, exactlyOnce("--runner=FlinkRunner", "--checkpointingInterval=1000"));
    assertEquals(
        false,
        exactlyOnce("--runner=FlinkRunner", "--checkpointingInterval=1000", "--exactlyOnce=false"));
    // No checkpoints to commit with: at least once (warned), unless asked for, which fails.
    assertEquals(false, exactlyOnce("--runner=FlinkRunner"));
    assertThat(
        assertThrows(
                IllegalArgumentException.class,
                () -> exactlyOnce("--runner=FlinkRunner", "--exactlyOnce"))
            .getMessage(),
        containsString("pass --checkpointingInterval=MILLIS"));
    // Beam's Spark runner cannot: at least once, asked for or not.
    assertEquals(false, exactlyOnce("--runner=SparkRunner"));
    assertEquals(false, exactlyOnce("--runner=SparkRunner", "--exactlyOnce"));
  }
}
