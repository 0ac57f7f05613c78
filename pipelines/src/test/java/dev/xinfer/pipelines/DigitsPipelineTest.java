package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.util.Collections;
import java.util.List;
import java.util.Map;
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
  }

  @Test
  public void theOnePassParseReadsEachCellAsSplitAndTrimDo() {
    java.util.Random random = new java.util.Random(11);
    String[] values = {"0", "16.0", ".5", "1.", "-3.5", "1e3", "NaN", "12345678", "0.30000001"};
    String[] blanks = {"", " ", "\t", "  "};
    for (int n = 0; n < 2_000; n++) {
      StringBuilder line = new StringBuilder(" 4 ,").append(n).append('\t');
      int pixels = 1 + random.nextInt(6);
      for (int i = 0; i < pixels; i++) {
        line.append(',')
            .append(blanks[random.nextInt(blanks.length)])
            .append(values[random.nextInt(values.length)])
            .append(blanks[random.nextInt(blanks.length)]);
      }
      String[] cells = line.toString().split(",", -1);
      List<Float> expected = new java.util.ArrayList<>();
      for (int i = 2; i < cells.length; i++) {
        expected.add(Float.parseFloat(cells[i].trim()));
      }
      Row row = DigitsPipeline.parse(line.toString());
      assertEquals(line.toString(), 4L, (long) row.getInt64("id"));
      assertEquals(line.toString(), (long) n, (long) row.getInt64("label"));
      assertEquals(line.toString(), expected, row.getArray("features"));
    }
  }

  @Test
  public void badCellsNameTheRecordFieldAndValue() {
    Map<String, String> messages = new java.util.LinkedHashMap<>();
    messages.put(
        "5,1,1.0,,2.0", "Record id=5: field 'features' value 1 ('', column 4) is not a number");
    messages.put("x,1,1.0", "field 'id' is 'x', not a whole number");
    messages.put("5", "has 1 cells; expected id,label,p0,...");
    messages.put("5,1", "has 2 cells; expected id,label,p0,...");
    messages.put("5,1,1.0, x ", "value 1 ('x', column 4) is not a number");
    messages.put("5,1,2,", "value 1 ('', column 4) is not a number");
    messages.forEach(
        (line, message) ->
            assertThat(
                line,
                assertThrows(IllegalArgumentException.class, () -> DigitsPipeline.parse(line))
                    .getMessage(),
                containsString(message)));
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
