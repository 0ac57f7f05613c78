package dev.xinfer.runtime.python;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import org.apache.beam.sdk.Pipeline.PipelineExecutionException;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.testing.TestPipeline;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.Reify;
import org.apache.beam.sdk.transforms.windowing.GlobalWindow;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TimestampedValue;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.joda.time.Instant;
import org.junit.Rule;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * Blocks on the Java side alone (the Java DirectRunner, no Python): what {@link RowBlocks.PackFn}
 * sends for rows of several tensor fields, and the output Rows {@link RowBlocks.UnpackFn} makes
 * from a block as Python returns it. {@code python-expansion/tests/test_blocks.py} builds and reads
 * the same format on the Python side.
 */
@RunWith(JUnit4.class)
public class RowBlocksTest {
  @Rule public final transient TestPipeline p = TestPipeline.create();

  static final Schema DIGIT =
      Schema.builder()
          .addInt64Field("id")
          .addNullableField("pixels", FieldType.array(FieldType.FLOAT))
          .addArrayField("grid", FieldType.array(FieldType.DOUBLE))
          .addInt64Field("inked")
          .addArrayField("mask", FieldType.BOOLEAN)
          .addStringField("note")
          .build();

  static final List<String> TENSORS = List.of("pixels", "grid", "inked", "mask");

  static Row digit(long id, List<Float> pixels, List<List<Double>> grid) {
    return Row.withSchema(DIGIT)
        .addValues(id, pixels, grid, 10 * id, List.of(true, id % 2 == 0), "n" + id)
        .build();
  }

  static Row digit(long id) {
    return digit(
        id, List.of((float) id, 0.5f, -1f), List.of(List.of(1.0 * id, 2.0), List.of(3.0, 4.0)));
  }

  private static ByteBuffer le(byte[] bytes) {
    return ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
  }

  private static <T> List<T> list(Collection<T> values) {
    return new ArrayList<>(values);
  }

  @Test
  public void theTensorTypesAreNumbersAndBooleansAndArraysOfThem() {
    assertTrue(RowBlocks.isTensor(FieldType.INT64));
    assertTrue(RowBlocks.isTensor(FieldType.array(FieldType.array(FieldType.DOUBLE))));
    assertTrue(RowBlocks.isTensor(FieldType.iterable(FieldType.BOOLEAN)));
    assertTrue(RowBlocks.isTensor(FieldType.array(FieldType.BYTE.withNullable(true))));
    assertFalse(RowBlocks.isTensor(FieldType.STRING));
    assertFalse(RowBlocks.isTensor(FieldType.BYTES));
    assertFalse(RowBlocks.isTensor(FieldType.array(FieldType.STRING)));
    assertFalse(RowBlocks.isTensor(FieldType.map(FieldType.STRING, FieldType.FLOAT)));
    assertThrows(
        IllegalArgumentException.class, () -> new RowBlocks.PackFn(DIGIT, List.of("note"), 4));
  }

  /** A receiver that adds each block PackFn outputs to {@code blocks}. */
  static DoFn.OutputReceiver<Row> into(List<Row> blocks) {
    return new DoFn.OutputReceiver<Row>() {
      @Override
      public void output(Row block) {
        blocks.add(block);
      }

      @Override
      public void outputWithTimestamp(Row block, Instant timestamp) {
        blocks.add(block);
      }
    };
  }

  /** The full blocks of {@code maxRows} that PackFn makes of {@code rows}, one bundle. */
  static List<Row> pack(int maxRows, List<TimestampedValue<Row>> rows) throws Exception {
    RowBlocks.PackFn pack = new RowBlocks.PackFn(DIGIT, TENSORS, maxRows);
    List<Row> blocks = new ArrayList<>();
    DoFn.OutputReceiver<Row> out = into(blocks);
    pack.startBundle();
    for (TimestampedValue<Row> row : rows) {
      pack.process(row.getValue(), row.getTimestamp(), GlobalWindow.INSTANCE, out);
    }
    return blocks;
  }

  static List<TimestampedValue<Row>> at(Row... rows) {
    List<TimestampedValue<Row>> values = new ArrayList<>();
    for (Row row : rows) {
      values.add(TimestampedValue.of(row, new Instant(row.getInt64("id"))));
    }
    return values;
  }

  /** A streaming block's wait in these tests: long beside a cold JVM's first rows. */
  private static final long WAIT_MILLIS = 300;

  /**
   * Rows into a PackFn's bundle: {@code row(id)} processes {@code digit(id)} at time {@code id}.
   */
  private interface Rows {
    void row(long id) throws Exception;
  }

  /** Starts a bundle of {@code pack}, whose blocks go to {@code blocks}. */
  private static Rows bundle(RowBlocks.PackFn pack, List<Row> blocks) {
    DoFn.OutputReceiver<Row> out = into(blocks);
    pack.startBundle();
    return id -> pack.process(digit(id), new Instant(id), GlobalWindow.INSTANCE, out);
  }

  @Test
  public void aStreamingBlockClosesWhenARowComesAfterItsWait() throws Exception {
    List<Row> blocks = new ArrayList<>();
    Rows pack = bundle(new RowBlocks.PackFn(DIGIT, TENSORS, 100, WAIT_MILLIS), blocks);
    pack.row(0);
    assertEquals("the first row has none before it: it goes alone", 1, blocks.size());
    pack.row(1);
    pack.row(2);
    assertEquals("a block younger than its wait stays open", 1, blocks.size());
    Thread.sleep(2 * WAIT_MILLIS);
    pack.row(3);
    assertEquals(2, blocks.size());
    assertEquals(3L, (long) blocks.get(1).getInt64(RowBlocks.COUNT));
    // A row right after: a new block, which waits again.
    pack.row(4);
    assertEquals(2, blocks.size());
  }

  @Test
  public void aStreamingRowLongAfterTheOneBeforeGoesAloneAtOnce() throws Exception {
    List<Row> blocks = new ArrayList<>();
    Rows pack = bundle(new RowBlocks.PackFn(DIGIT, TENSORS, 100, WAIT_MILLIS), blocks);
    for (int i = 0; i < 3; i++) {
      Thread.sleep(2 * WAIT_MILLIS);
      pack.row(i);
      assertEquals("a sparse row does not wait for the next", i + 1, blocks.size());
      assertEquals(1L, (long) blocks.get(i).getInt64(RowBlocks.COUNT));
    }
    // Without a wait (a batch job) rows wait for a full block or the bundle's end.
    Rows batch = bundle(new RowBlocks.PackFn(DIGIT, TENSORS, 100), blocks);
    Thread.sleep(2 * WAIT_MILLIS);
    batch.row(9);
    assertEquals(3, blocks.size());
  }

  @Test
  public void eachTensorFieldCrossesAsOneLittleEndianTensorWithItsRowShape() throws Exception {
    List<Row> blocks =
        pack(
            3,
            List.of(
                TimestampedValue.of(digit(0), new Instant(7)),
                TimestampedValue.of(digit(1), new Instant(5)),
                TimestampedValue.of(digit(2), new Instant(9))));
    assertEquals(1, blocks.size());
    Row block = blocks.get(0);
    assertEquals(3L, (long) block.getInt64(RowBlocks.COUNT));
    List<List<Long>> shapes = new ArrayList<>();
    block.<Collection<Long>>getArray(RowBlocks.SHAPES).forEach(s -> shapes.add(list(s)));
    assertEquals(List.of(List.of(3L), List.of(2L, 2L), List.of(), List.of(2L)), shapes);
    List<byte[]> tensors = list(block.<byte[]>getArray(RowBlocks.TENSORS));
    ByteBuffer pixels = le(tensors.get(0));
    for (int row = 0; row < 3; row++) {
      assertEquals(row, pixels.getFloat(), 0);
      assertEquals(0.5f, pixels.getFloat(), 0);
      assertEquals(-1f, pixels.getFloat(), 0);
    }
    ByteBuffer grid = le(tensors.get(1));
    assertEquals(3 * 4 * 8, grid.remaining());
    assertEquals(0.0, grid.getDouble(0), 0);
    assertEquals(2.0, grid.getDouble(8 * 8), 0); // row 2, [0][0]
    assertEquals(List.of(0L, 10L, 20L), longs(le(tensors.get(2))));
    assertArrayEquals(new byte[] {1, 1, 1, 0, 1, 1}, tensors.get(3));
    assertEquals(List.of(7L, 5L, 9L), longs(le(block.getBytes(RowBlocks.TIMESTAMPS))));
    // The rows without their tensor fields (which crossed once, as the tensors), for the output
    // Rows and the record-by-record path.
    Schema rest = Schema.builder().addInt64Field("id").addStringField("note").build();
    java.io.InputStream rows = new java.io.ByteArrayInputStream(block.getBytes(RowBlocks.ROWS));
    for (int row = 0; row < 3; row++) {
      assertEquals(
          Row.withSchema(rest).addValues((long) row, "n" + row).build(),
          RowCoder.of(rest).decode(rows));
    }
    assertEquals(0, rows.available());
  }

  @Test
  public void aBlockGrowsPastTheRowsItMadeRoomForAndTheNextStartsAsLarge() throws Exception {
    int rows = 3 * RowBlocks.FIRST_BLOCK_ROWS;
    List<TimestampedValue<Row>> values = new ArrayList<>();
    for (int i = 0; i < 2 * rows; i++) {
      values.add(TimestampedValue.of(digit(i), new Instant(1000 + i)));
    }
    List<Row> blocks = pack(rows, values);
    assertEquals(2, blocks.size());
    for (int b = 0; b < 2; b++) {
      Row block = blocks.get(b);
      assertEquals(rows, (long) block.getInt64(RowBlocks.COUNT));
      ByteBuffer pixels = le(list(block.<byte[]>getArray(RowBlocks.TENSORS)).get(0));
      List<Long> timestamps = longs(le(block.getBytes(RowBlocks.TIMESTAMPS)));
      assertEquals(3 * 4 * rows, pixels.remaining());
      assertEquals(rows, timestamps.size());
      for (int row = 0; row < rows; row++) {
        assertEquals(b * rows + row, pixels.getFloat(), 0);
        assertEquals(0.5f, pixels.getFloat(), 0);
        assertEquals(-1f, pixels.getFloat(), 0);
        assertEquals(1000L + b * rows + row, (long) timestamps.get(row));
      }
    }
  }

  private static List<Long> longs(ByteBuffer buffer) {
    List<Long> values = new ArrayList<>();
    while (buffer.remaining() >= 8) {
      values.add(buffer.getLong());
    }
    return values;
  }

  @Test
  public void aBlockWithARowWhoseValueIsNullOrOfAnotherShapeSendsNoTensors() throws Exception {
    Row shorter = digit(1, List.of(1f, 2f), List.of(List.of(1.0, 2.0), List.of(3.0, 4.0)));
    Row ragged = digit(4, List.of(1f, 2f, 3f), List.of(List.of(1.0, 2.0), List.of(3.0)));
    Row nullPixels = digit(7, null, List.of(List.of(1.0, 2.0), List.of(3.0, 4.0)));
    List<Row> blocks =
        pack(
            3,
            at(
                digit(0),
                shorter,
                digit(2), // another length
                digit(3),
                ragged,
                digit(5), // ragged inner arrays
                nullPixels,
                digit(8),
                digit(9), // a null first
                digit(10),
                digit(11),
                digit(12)));
    assertEquals(4, blocks.size());
    List<Integer> tensorCounts = new ArrayList<>();
    for (Row block : blocks) {
      assertEquals(3L, (long) block.getInt64(RowBlocks.COUNT));
      assertEquals(
          block.getArray(RowBlocks.TENSORS).size(), block.getArray(RowBlocks.SHAPES).size());
      tensorCounts.add(block.getArray(RowBlocks.TENSORS).size());
    }
    assertEquals(List.of(0, 0, 0, 4), tensorCounts);
    // A block without tensors carries whole rows.
    java.io.InputStream rows =
        new java.io.ByteArrayInputStream(blocks.get(0).getBytes(RowBlocks.ROWS));
    assertEquals(digit(0), RowCoder.of(DIGIT).decode(rows));
    assertEquals(shorter, RowCoder.of(DIGIT).decode(rows));
  }

  static final Schema OUTPUT =
      Schema.builder()
          .addFields(DIGIT.getFields())
          .addInt64Field("digit")
          .addArrayField("probabilities", FieldType.FLOAT)
          .addArrayField("boxes", FieldType.array(FieldType.DOUBLE))
          .addStringField("model_id")
          .build();

  static byte[] bytes(int size, java.util.function.Consumer<ByteBuffer> fill) {
    ByteBuffer buffer = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
    fill.accept(buffer);
    return buffer.array();
  }

  static byte[] rows(Row... rows) {
    java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
    for (Row row : rows) {
      try {
        RowCoder.of(DIGIT).encode(row, out);
      } catch (java.io.IOException e) {
        throw new java.io.UncheckedIOException(e);
      }
    }
    return out.toByteArray();
  }

  /**
   * A block as Python returns it for three rows, the second skipped: the digits (scalars), the
   * probabilities (one shape for every row) and boxes of each row's own shape.
   */
  static Row outputBlock(List<List<Long>> shapes, List<byte[]> tensors) {
    return Row.withSchema(RowBlocks.OUT)
        .addValues(
            3L,
            rows(digit(0), digit(1), digit(2)),
            bytes(24, b -> b.putLong(100).putLong(200).putLong(300)),
            "m1",
            bytes(4, b -> b.putInt(1)),
            shapes,
            tensors,
            List.of(),
            List.of())
        .build();
  }

  /** The output Rows UnpackFn makes of {@code block}, a block as Python returns it. */
  private PCollection<Row> unpack(Row block) {
    return p.apply(Create.of(block).withRowSchema(RowBlocks.OUT))
        .apply(ParDo.of(new RowBlocks.UnpackFn(DIGIT, TENSORS, OUTPUT)))
        .setRowSchema(OUTPUT);
  }

  @Test
  public void outputTensorsBecomeTheOutputFieldsOfEachRowButTheSkipped() {
    Row block =
        outputBlock(
            List.of(List.of(), List.of(2L), List.of(1L, 2L, 0L, 0L, 2L, 1L)),
            List.of(
                bytes(24, b -> b.putLong(7).putLong(0).putLong(9)),
                bytes(
                    24,
                    b ->
                        b.putFloat(0.25f)
                            .putFloat(0.75f)
                            .putFloat(0) // row 1, skipped: zeros
                            .putFloat(0)
                            .putFloat(0.5f)
                            .putFloat(0.5f)),
                bytes(32, b -> b.putDouble(1).putDouble(2).putDouble(3).putDouble(4))));
    PCollection<Row> out = unpack(block);
    PAssert.that(out)
        .containsInAnyOrder(
            Row.withSchema(OUTPUT)
                .addValues(digit(0).getValues())
                .addValues(7L, List.of(0.25f, 0.75f), List.of(List.of(1.0, 2.0)), "m1")
                .build(),
            Row.withSchema(OUTPUT)
                .addValues(digit(2).getValues())
                .addValues(9L, List.of(0.5f, 0.5f), List.of(List.of(3.0), List.of(4.0)), "m1")
                .build());
    // Each row keeps its own timestamp.
    PAssert.that(
            out.apply(Reify.timestamps())
                .apply(
                    MapElements.into(TypeDescriptors.longs())
                        .via(row -> row.getTimestamp().getMillis())))
        .containsInAnyOrder(100L, 300L);
    p.run().waitUntilFinish();
  }

  @Test
  public void aPackedBlockMakesEachRowAgainFromItsRestAndTheInputTensorsPythonReturned()
      throws Exception {
    Row digit = digit(0);
    Row other = digit(1);
    Row third = digit(2);
    Row in = pack(3, at(digit, other, third)).get(0);
    Row block =
        Row.withSchema(RowBlocks.OUT)
            .addValues(
                3L,
                in.getBytes(RowBlocks.ROWS),
                in.getBytes(RowBlocks.TIMESTAMPS),
                "m1",
                bytes(4, b -> b.putInt(1)),
                List.of(List.of(), List.of(2L), List.of(1L, 2L)),
                List.of(
                    bytes(24, b -> b.putLong(7).putLong(0).putLong(9)),
                    bytes(24, b -> b.putFloat(0.25f).putFloat(0.75f).putLong(0).putFloat(0.5f)),
                    bytes(48, b -> b.putDouble(1).putDouble(2))),
                in.getArray(RowBlocks.SHAPES),
                in.getArray(RowBlocks.TENSORS))
            .build();
    PCollection<Row> out = unpack(block);
    PAssert.that(out)
        .containsInAnyOrder(
            Row.withSchema(OUTPUT)
                .addValues(digit.getValues())
                .addValues(7L, List.of(0.25f, 0.75f), List.of(List.of(1.0, 2.0)), "m1")
                .build(),
            Row.withSchema(OUTPUT)
                .addValues(third.getValues())
                .addValues(9L, List.of(0.5f, 0f), List.of(List.of(0.0, 0.0)), "m1")
                .build());
    p.run().waitUntilFinish();
  }

  @Test
  public void aTensorListIsAReadOnlyListOfItsNumbers() throws Exception {
    // Two rows' floats in one block's bytes: each list sees its own part.
    byte[] block = bytes(16, b -> b.putFloat(9f).putFloat(1.5f).putFloat(-2f).putFloat(7f));
    RowBlocks.TensorList floats = new RowBlocks.TensorList(Schema.TypeName.FLOAT, block, 4, 2);
    assertEquals(List.of(1.5f, -2f), floats);
    assertEquals(List.of(9f), new RowBlocks.TensorList(Schema.TypeName.FLOAT, block, 0, 1));
    assertEquals(List.of(1.5f, -2f), new ArrayList<>(floats));
    assertEquals(List.of(1.5f, -2f).hashCode(), floats.hashCode());
    assertEquals(List.of(), new RowBlocks.TensorList(Schema.TypeName.FLOAT, block, 16, 0));
    assertEquals(
        List.of(false),
        new RowBlocks.TensorList(Schema.TypeName.BOOLEAN, new byte[] {1, 0, 1}, 1, 1));
    assertEquals(
        List.of(3L),
        new RowBlocks.TensorList(Schema.TypeName.INT64, bytes(8, b -> b.putLong(3)), 0, 1));
    assertEquals(
        List.of((short) -4),
        new RowBlocks.TensorList(
            Schema.TypeName.INT16,
            bytes(4, b -> b.putShort((short) 1).putShort((short) -4)),
            2,
            1));
    assertEquals(
        List.of(2.5),
        new RowBlocks.TensorList(
            Schema.TypeName.DOUBLE, bytes(16, b -> b.putDouble(1).putDouble(2.5)), 8, 1));
    assertThrows(UnsupportedOperationException.class, () -> floats.set(0, 1f));
    assertThrows(IndexOutOfBoundsException.class, () -> floats.get(2));
    assertThrows(IndexOutOfBoundsException.class, () -> floats.get(-1));
    // A list past the block's end is refused when made, not when read.
    assertThrows(
        IndexOutOfBoundsException.class,
        () -> new RowBlocks.TensorList(Schema.TypeName.FLOAT, block, 12, 2));
    // Java serialization (a Row is Serializable) gives a plain list of the same numbers, not the
    // block's other rows.
    java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
    try (java.io.ObjectOutputStream out = new java.io.ObjectOutputStream(bytes)) {
      out.writeObject(floats);
    }
    try (java.io.ObjectInputStream read =
        new java.io.ObjectInputStream(new java.io.ByteArrayInputStream(bytes.toByteArray()))) {
      assertEquals(new ArrayList<>(List.of(1.5f, -2f)), read.readObject());
    }
  }

  @Test
  public void rowsEncodedIntoBytesOutDecodeFromBytesIn() throws Exception {
    Schema schema = Schema.builder().addInt64Field("id").addStringField("name").build();
    org.apache.beam.sdk.coders.RowCoder coder = org.apache.beam.sdk.coders.RowCoder.of(schema);
    RowBlocks.BytesOut out = new RowBlocks.BytesOut(1); // grows past its first 16 bytes
    List<Row> rows = new ArrayList<>();
    for (long i = 0; i < 100; i++) {
      rows.add(Row.withSchema(schema).addValues(i * 1_000_003, "row " + i).build());
      coder.encode(rows.get(rows.size() - 1), out);
    }
    RowBlocks.BytesIn in = new RowBlocks.BytesIn(out.toByteArray());
    for (Row row : rows) {
      assertEquals(row, coder.decode(in));
    }
    assertEquals(0, in.available());
    assertEquals(-1, in.read());
    assertEquals(-1, in.read(new byte[4], 0, 4));
    assertEquals(0, in.read(new byte[4], 0, 0));
  }

  @Test
  public void aBlockThatDoesNotFitTheOutputSchemaNamesTheVersionMismatch() {
    Row block =
        outputBlock(
            List.of(List.of(), List.of(2L)), List.of(bytes(24, b -> {}), bytes(24, b -> {})));
    unpack(block);
    PipelineExecutionException e =
        assertThrows(PipelineExecutionException.class, () -> p.run().waitUntilFinish());
    assertTrue(
        e.getMessage(),
        e.getMessage().contains("2 output tensors where this Java version reads 3")
            && e.getMessage().contains("different versions: re-run ./xinfer setup"));
  }
}
