package dev.xinfer.runtime.python;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.schemas.Schema.TypeName;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Duration;
import org.joda.time.Instant;

/**
 * Rows cross to Python and back in blocks: one element carries up to a batch of rows, their
 * features as one contiguous little-endian tensor that Python reads with {@code np.frombuffer}.
 *
 * <p>Crossing the Fn API element by element costs tens of microseconds per row on the runner and in
 * the SDK harnesses; a block pays that once per batch. {@link PackFn} builds the blocks (per bundle
 * and window, at most {@code maxBatchSize} rows), Python runs the model on each block's tensor
 * ({@code xinfer.transforms.RowInference} with {@code packed=True}) and returns a block of scores,
 * and {@link UnpackFn} makes the output Rows, each with its own timestamp.
 *
 * <p>A block also carries its rows, {@link RowCoder}-encoded, untouched by Python on the fast path:
 * the output Rows keep every input field exactly, and a block whose tensor the model cannot take (a
 * null or wrong-length feature array, a NaN under the reject policy, a batch the model refuses) is
 * decoded in Python and run record by record, so each bad record fails alone with the same message
 * and stage as without blocks.
 */
@Internal
public final class RowBlocks {
  /** Block field: the number of rows. */
  public static final String COUNT = "count";

  /** Block field: values per row in {@code features}, or -1 when the rows' features differ. */
  public static final String WIDTH = "width";

  /** Block field: the rows' features, row after row, little-endian. */
  public static final String FEATURES = "features";

  /** Block field: the rows, each {@link RowCoder}-encoded, one after another. */
  public static final String ROWS = "rows";

  /** Block field: each row's timestamp, milliseconds since the epoch, int64 little-endian. */
  public static final String TIMESTAMPS = "timestamps";

  /** Output block field: the model's output per row, float32 little-endian, row after row. */
  public static final String SCORES = "scores";

  /** Output block field: each row's predicted class, int64 little-endian. */
  public static final String CLASSES = "classes";

  /** Output block field: the model (version) that made the scores. */
  public static final String MODEL_ID = "model_id";

  /** Output block field: indices (int32) of the rows that got no prediction (dead letter). */
  public static final String SKIPPED = "skipped";

  /** What Java sends to Python. */
  public static final Schema IN =
      Schema.builder()
          .addInt64Field(COUNT)
          .addInt64Field(WIDTH)
          .addByteArrayField(FEATURES)
          .addByteArrayField(ROWS)
          .addByteArrayField(TIMESTAMPS)
          .build();

  /** What Python returns. */
  public static final Schema OUT =
      Schema.builder()
          .addInt64Field(COUNT)
          .addByteArrayField(ROWS)
          .addByteArrayField(TIMESTAMPS)
          .addInt64Field(WIDTH)
          .addByteArrayField(SCORES)
          .addByteArrayField(CLASSES)
          .addStringField(MODEL_ID)
          .addByteArrayField(SKIPPED)
          .build();

  private RowBlocks() {}

  /**
   * The numpy dtype of a feature field's values in a block ({@code float32}, {@code float64},
   * {@code int32}, {@code int64}), or null when such a field does not travel in blocks.
   */
  public static @Nullable String dtypeOf(FieldType featureType) {
    FieldType element = featureType.getCollectionElementType();
    if (!featureType.getTypeName().isCollectionType() || element == null) {
      return null;
    }
    switch (element.getTypeName()) {
      case FLOAT:
        return "float32";
      case DOUBLE:
        return "float64";
      case INT32:
        return "int32";
      case INT64:
        return "int64";
      default:
        return null;
    }
  }

  /** The schema as Python reads it: a base64 {@code Schema} proto. */
  public static String schemaForPython(Schema schema) {
    return Base64.getEncoder()
        .encodeToString(SchemaTranslation.schemaToProto(schema, true).toByteArray());
  }

  /** Packs Rows into blocks of at most {@code maxRows}, per bundle and window. */
  public static final class PackFn extends DoFn<Row, Row> {
    private final Schema schema;
    private final String featureField;
    private final int maxRows;
    private transient @Nullable Map<BoundedWindow, Block> open;

    public PackFn(Schema schema, String featureField, int maxRows) {
      this.schema = schema;
      this.featureField = featureField;
      this.maxRows = maxRows;
    }

    @StartBundle
    public void startBundle() {
      open = new HashMap<>();
    }

    @ProcessElement
    public void process(
        @Element Row row,
        @Timestamp Instant timestamp,
        BoundedWindow window,
        OutputReceiver<Row> out)
        throws IOException {
      Map<BoundedWindow, Block> blocks = openBlocks();
      Block block = blocks.get(window);
      if (block == null) {
        block = new Block(RowCoder.of(schema), schema.indexOf(featureField), typeOf(), maxRows);
        blocks.put(window, block);
      }
      block.add(row, timestamp);
      if (block.count == maxRows) {
        blocks.remove(window);
        // A block's timestamp is its earliest row's, at most this row's: hence the skew.
        out.outputWithTimestamp(block.toRow(), block.earliest);
      }
    }

    @FinishBundle
    public void finishBundle(FinishBundleContext context) {
      Map<BoundedWindow, Block> blocks = openBlocks();
      blocks.forEach((window, block) -> context.output(block.toRow(), block.earliest, window));
      blocks.clear();
    }

    @Override
    @SuppressWarnings("deprecation") // the only way to output at an earlier row's timestamp
    public Duration getAllowedTimestampSkew() {
      return Duration.millis(Long.MAX_VALUE);
    }

    private Map<BoundedWindow, Block> openBlocks() {
      if (open == null) {
        open = new HashMap<>();
      }
      return open;
    }

    private TypeName typeOf() {
      FieldType element = schema.getField(featureField).getType().getCollectionElementType();
      if (element == null || dtypeOf(schema.getField(featureField).getType()) == null) {
        throw new IllegalArgumentException(
            "field '" + featureField + "' does not travel in blocks: " + element);
      }
      return element.getTypeName();
    }
  }

  /** One block being filled. */
  private static final class Block {
    private final RowCoder coder;
    private final int featureIndex;
    private final TypeName type;
    private final ByteArrayOutputStream rows = new ByteArrayOutputStream();
    private final ByteBuffer timestamps;
    private ByteBuffer features;
    private int count;
    private int width = -2; // -2: no row yet; -1: rows differ, Python reads the rows instead
    private Instant earliest = BoundedWindow.TIMESTAMP_MAX_VALUE;

    Block(RowCoder coder, int featureIndex, TypeName type, int maxRows) {
      this.coder = coder;
      this.featureIndex = featureIndex;
      this.type = type;
      this.timestamps = ByteBuffer.allocate(8 * maxRows).order(ByteOrder.LITTLE_ENDIAN);
      this.features = ByteBuffer.allocate(0);
    }

    void add(Row row, Instant timestamp) throws IOException {
      coder.encode(row, rows);
      timestamps.putLong(timestamp.getMillis());
      if (timestamp.isBefore(earliest)) {
        earliest = timestamp;
      }
      addFeatures(row.getValue(featureIndex));
      count++;
    }

    private void addFeatures(@Nullable Collection<?> values) {
      if (width == -1) {
        return;
      }
      if (values == null || (width >= 0 && values.size() != width)) {
        width = -1;
        return;
      }
      int bytesPerValue = type == TypeName.FLOAT || type == TypeName.INT32 ? 4 : 8;
      if (width == -2) {
        width = values.size();
        features =
            ByteBuffer.allocate(bytesPerValue * width * (timestamps.capacity() / 8))
                .order(ByteOrder.LITTLE_ENDIAN);
      }
      for (Object v : values) {
        if (v == null) {
          width = -1;
          return;
        }
        switch (type) {
          case FLOAT:
            features.putFloat((Float) v);
            break;
          case DOUBLE:
            features.putDouble((Double) v);
            break;
          case INT32:
            features.putInt((Integer) v);
            break;
          default:
            features.putLong((Long) v);
        }
      }
    }

    Row toRow() {
      boolean packed = width >= 0;
      return Row.withSchema(IN)
          .addValues(
              (long) count,
              (long) (packed ? width : -1),
              packed ? prefix(features) : new byte[0],
              rows.toByteArray(),
              prefix(timestamps))
          .build();
    }

    private static byte[] prefix(ByteBuffer buffer) {
      byte[] bytes = new byte[buffer.position()];
      System.arraycopy(buffer.array(), 0, bytes, 0, bytes.length);
      return bytes;
    }
  }

  /** Turns Python's output blocks into output Rows: input fields, then the inference fields. */
  public static final class UnpackFn extends DoFn<Row, Row> {
    private final RowCoder coder;
    private final Schema outputSchema;

    public UnpackFn(Schema inputSchema, Schema outputSchema) {
      this.coder = RowCoder.of(inputSchema);
      this.outputSchema = outputSchema;
    }

    @ProcessElement
    public void process(@Element Row block, OutputReceiver<Row> out) throws IOException {
      // INT64: Python reads a negative INT32 as unsigned.
      int count = Math.toIntExact(block.getInt64(COUNT));
      int width = Math.toIntExact(block.getInt64(WIDTH));
      String modelId = block.getString(MODEL_ID);
      FloatBuffer scores = le(block.getBytes(SCORES)).asFloatBuffer();
      LongBuffer classes = le(block.getBytes(CLASSES)).asLongBuffer();
      LongBuffer timestamps = le(block.getBytes(TIMESTAMPS)).asLongBuffer();
      IntBuffer skipped = le(block.getBytes(SKIPPED)).asIntBuffer();
      if (scores.capacity() != count * width
          || classes.capacity() != count
          || timestamps.capacity() != count) {
        throw new IllegalStateException(
            String.format(
                "A block from Python has %d scores, %d classes and %d timestamps for %d rows of "
                    + "%d scores; the Java and Python halves of xinfer are from different "
                    + "versions: re-run ./xinfer setup (or reinstall ./python-expansion).",
                scores.capacity(), classes.capacity(), timestamps.capacity(), count, width));
      }
      int nextSkipped = skipped.hasRemaining() ? skipped.get() : -1;
      InputStream rows = new ByteArrayInputStream(block.getBytes(ROWS));
      for (int i = 0; i < count; i++) {
        Row input = coder.decode(rows);
        if (i == nextSkipped) {
          nextSkipped = skipped.hasRemaining() ? skipped.get() : -1;
          continue;
        }
        List<Float> rowScores = new ArrayList<>(width);
        for (int k = 0; k < width; k++) {
          rowScores.add(scores.get(i * width + k));
        }
        out.outputWithTimestamp(
            Row.withSchema(outputSchema)
                .addValues(input.getValues())
                .addValues(rowScores, classes.get(i), modelId)
                .build(),
            new Instant(timestamps.get(i)));
      }
    }

    private static ByteBuffer le(byte[] bytes) {
      return ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }
  }
}
