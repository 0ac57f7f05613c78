package dev.xinfer.runtime.python;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.Serializable;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.LongBuffer;
import java.util.AbstractList;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Collections;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.RandomAccess;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.Field;
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
 * Rows cross to Python and back in blocks: one element carries up to a batch of rows, and each
 * model input's field as one contiguous little-endian tensor that Python reads with {@code
 * np.frombuffer}.
 *
 * <p>Crossing the Fn API element by element costs tens of microseconds per row on the runner and in
 * the SDK harnesses; a block pays that once per batch. {@link PackFn} builds the blocks (per bundle
 * and window, at most {@code maxBatchSize} rows), Python runs the model on each block's tensors
 * ({@code xinfer.transforms.RowInference} with {@code packed=True}) and returns a block of output
 * tensors, and {@link UnpackFn} makes the output Rows, each with its own timestamp.
 *
 * <p>What a block carries is fixed when the pipeline is built: the tensor fields (the feature
 * field, or the field of each named input, in order) and the output fields (the declared outputs,
 * or {@code scores} and {@code predicted_class}). Each is a number or a boolean ({@code BYTE},
 * {@code INT16}, {@code INT32}, {@code INT64}, {@code FLOAT}, {@code DOUBLE}, {@code BOOLEAN}), a
 * scalar or arrays (of arrays) of them: see {@link #isTensor}. A tensor holds every row's value,
 * row after row, with the shape one row's value has ({@code []} for a scalar, {@code [64]}, {@code
 * [8, 8]}); a block with a row whose value differs in shape, or holds a null, sends no tensors. The
 * output block holds one tensor per output field the same way; when the rows' outputs differ in
 * shape (records run one by one), its shape entry gives each row's shape in turn.
 *
 * <p>Strings and bytes do not cross in blocks: a model with such an input or declared output keeps
 * rows one by one. Only TensorFlow could take a string tensor without a Python object per value
 * (cut from one buffer by {@code tf.strings.substr}); ONNX Runtime's Python API, tokenizers and
 * Beam handlers take one Python object per string, and PyTorch, XGBoost and scikit-learn take no
 * strings. Java would have to pack strings for TensorFlow models alone, but it knows a model's
 * framework only when {@code withFramework} names it (Python tells it from the file); and a string
 * output (a label) would need the same in reverse, since {@code .numpy()} makes an object per
 * string.
 *
 * <p>A block also carries its rows, {@link RowCoder}-encoded, untouched by Python on the fast path,
 * and Python returns the input tensors with the output: the output Rows keep every input field
 * exactly. A block with tensors carries each row without its tensor fields (the rows' {@link
 * RowSplit#rest}): a tensor field's values cross once, as the tensor, not a second time in the
 * rows, and {@link UnpackFn} makes them again from the tensor Python returned. A block without
 * tensors carries whole rows. A block whose tensors the model cannot take (a NaN under the reject
 * policy, a batch the model refuses, an output that does not fit its declared type) is decoded in
 * Python (the rest and the tensors make each row again) and run record by record, so each bad
 * record fails alone with the same message and stage as without blocks.
 *
 * <p>The output Rows' array fields are read-only lists over each row's own part of its tensor
 * ({@link TensorList}): numbers are boxed when read, not when the Row is made.
 */
@Internal
public final class RowBlocks {
  /** Block field: the number of rows. */
  public static final String COUNT = "count";

  /** Block field: the rows, each {@link RowCoder}-encoded, one after another. */
  public static final String ROWS = "rows";

  /** Block field: each row's timestamp, milliseconds since the epoch, int64 little-endian. */
  public static final String TIMESTAMPS = "timestamps";

  /**
   * Block field: per tensor, the shape of one row's value; in an output block, when the rows'
   * values differ in shape, each row's shape in turn (rank times count entries).
   */
  public static final String SHAPES = "shapes";

  /** Block field: per tensor, the rows' values, row after row, little-endian. */
  public static final String TENSORS = "tensors";

  /** Output block field: the model (version) that made the outputs. */
  public static final String MODEL_ID = "model_id";

  /** Output block field: indices (int32) of the rows that got no prediction (dead letter). */
  public static final String SKIPPED = "skipped";

  /** Output block field: the input block's {@link #SHAPES}, returned as they came. */
  public static final String INPUT_SHAPES = "input_shapes";

  /** Output block field: the input block's {@link #TENSORS}, returned as they came. */
  public static final String INPUT_TENSORS = "input_tensors";

  private static final FieldType SHAPES_TYPE = FieldType.array(FieldType.array(FieldType.INT64));
  private static final FieldType TENSORS_TYPE = FieldType.array(FieldType.BYTES);

  /** What Java sends to Python; no tensors when the rows' values do not make tensors. */
  public static final Schema IN =
      Schema.builder()
          .addInt64Field(COUNT)
          .addByteArrayField(ROWS)
          .addByteArrayField(TIMESTAMPS)
          .addField(SHAPES, SHAPES_TYPE)
          .addField(TENSORS, TENSORS_TYPE)
          .build();

  /** What Python returns: the output tensors, in the order of the output fields. */
  public static final Schema OUT =
      Schema.builder()
          .addInt64Field(COUNT)
          .addByteArrayField(ROWS)
          .addByteArrayField(TIMESTAMPS)
          .addStringField(MODEL_ID)
          .addByteArrayField(SKIPPED)
          .addField(SHAPES, SHAPES_TYPE)
          .addField(TENSORS, TENSORS_TYPE)
          .addField(INPUT_SHAPES, SHAPES_TYPE)
          .addField(INPUT_TENSORS, TENSORS_TYPE)
          .build();

  /** The element types a tensor holds, and the bytes of each value. */
  private static final Map<TypeName, Integer> ELEMENT_BYTES = new EnumMap<>(TypeName.class);

  static {
    ELEMENT_BYTES.put(TypeName.BYTE, 1);
    ELEMENT_BYTES.put(TypeName.BOOLEAN, 1);
    ELEMENT_BYTES.put(TypeName.INT16, 2);
    ELEMENT_BYTES.put(TypeName.INT32, 4);
    ELEMENT_BYTES.put(TypeName.FLOAT, 4);
    ELEMENT_BYTES.put(TypeName.INT64, 8);
    ELEMENT_BYTES.put(TypeName.DOUBLE, 8);
  }

  private static final String MISMATCH =
      "the Java and Python halves of xinfer are from different versions: re-run ./xinfer setup "
          + "(or reinstall ./python-expansion).";

  private RowBlocks() {}

  /**
   * Whether a field of this type crosses in blocks as a tensor: a number or a boolean, or an array
   * (of arrays) of them.
   */
  public static boolean isTensor(FieldType type) {
    return Tensor.of("", type) != null;
  }

  /** The schema as Python reads it: a base64 {@code Schema} proto. */
  public static String schemaForPython(Schema schema) {
    return Base64.getEncoder()
        .encodeToString(SchemaTranslation.schemaToProto(schema, true).toByteArray());
  }

  /** One tensor of a block: a field, its element type and its array nesting. */
  private static final class Tensor implements Serializable {
    private static final long serialVersionUID = 1L;

    final String field;
    final TypeName element;
    final int rank;

    private Tensor(String field, TypeName element, int rank) {
      this.field = field;
      this.element = element;
      this.rank = rank;
    }

    static @Nullable Tensor of(String field, FieldType type) {
      int rank = 0;
      while (type.getTypeName().isCollectionType()) {
        FieldType element = type.getCollectionElementType();
        if (element == null) {
          return null;
        }
        type = element;
        rank++;
      }
      return ELEMENT_BYTES.containsKey(type.getTypeName())
          ? new Tensor(field, type.getTypeName(), rank)
          : null;
    }

    static Tensor of(Schema schema, String field) {
      Tensor tensor = of(field, schema.getField(field).getType());
      if (tensor == null) {
        throw new IllegalArgumentException(
            "field '" + field + "' does not cross in blocks: " + schema.getField(field).getType());
      }
      return tensor;
    }

    int bytes() {
      return ELEMENT_BYTES.get(element);
    }
  }

  /**
   * A row split into the fields that cross as tensors and the rest, which crosses {@link
   * RowCoder}-encoded: for the rows' schema and tensor fields, fixed when the pipeline is built.
   */
  static final class RowSplit implements Serializable {
    private static final long serialVersionUID = 1L;

    final Schema schema;
    final List<Tensor> tensors;

    /** Per tensor, its field's index in the schema. */
    final int[] tensorFields;

    /** Per field of the schema, the first tensor that holds it, or -1. */
    final int[] fieldTensors;

    /** The fields that are no tensor, in the schema's order. */
    final Schema rest;

    /** Per field of {@link #rest}, its index in the schema. */
    final int[] restFields;

    /** Whole rows' coder (a block without tensors) and the rests' (a block with tensors). */
    final RowCoder rowCoder;

    final RowCoder restCoder;

    RowSplit(Schema schema, List<String> tensorFields) {
      this.schema = schema;
      this.tensors = new ArrayList<>();
      this.tensorFields = new int[tensorFields.size()];
      this.fieldTensors = new int[schema.getFieldCount()];
      java.util.Arrays.fill(fieldTensors, -1);
      for (int t = 0; t < tensorFields.size(); t++) {
        tensors.add(Tensor.of(schema, tensorFields.get(t)));
        int field = schema.indexOf(tensorFields.get(t));
        this.tensorFields[t] = field;
        if (fieldTensors[field] < 0) {
          fieldTensors[field] = t;
        }
      }
      Schema.Builder rest = Schema.builder();
      List<Integer> restFields = new ArrayList<>();
      for (int f = 0; f < schema.getFieldCount(); f++) {
        if (fieldTensors[f] < 0) {
          rest.addField(schema.getField(f));
          restFields.add(f);
        }
      }
      this.rest = rest.build();
      this.restFields = restFields.stream().mapToInt(Integer::intValue).toArray();
      this.rowCoder = RowCoder.of(schema);
      this.restCoder = RowCoder.of(this.rest);
    }

    /** The row without its tensor fields. */
    Row restOf(Row row) {
      List<@Nullable Object> values = new ArrayList<>(restFields.length);
      for (int f : restFields) {
        values.add(row.getValue(f));
      }
      return Row.withSchema(rest).attachValues(values);
    }
  }

  /**
   * How long, in ms, a streaming block waits for more rows once its first row is in, where data
   * moves within bundles ({@code RunnerBootstrap.movesDataWithinBundles}): a block closes when a
   * row comes after this (or it is full, or the bundle ends). At 20,000 rows/s that makes blocks of
   * about 40 rows; at 1,000/s of two or three. A row that comes this long or longer after the row
   * before it goes at once, in a block of its own: in a sparse stream no row follows soon to close
   * its block, which would wait for its bundle's end.
   */
  public static final long STREAMING_BLOCK_WAIT_MILLIS = 2;

  /**
   * Packs Rows into blocks of at most {@code maxRows}, per bundle and window; with a {@code
   * maxWaitMillis}, a block also closes once a row comes that long after its first, and a row that
   * comes that long after the row before it goes at once, alone.
   */
  public static final class PackFn extends DoFn<Row, Row> {
    private final RowSplit split;
    private final int maxRows;
    private final long maxWaitNanos;
    private transient @Nullable Map<BoundedWindow, Block> open;

    /**
     * The rows of the block closed last: a new block makes room for as many (at least {@link
     * #FIRST_BLOCK_ROWS}) and grows if more come. Streaming blocks hold a few rows; making room for
     * {@code maxRows} each time allocated ~65 KB per block of digits, a third of the job JVM's
     * allocation at 1,000 rows/s.
     */
    private transient int lastRows;

    /** When the last row came ({@code nanoTime}); 0 before the first. */
    private transient long lastRowNanos;

    /** Blocks of {@code schema} rows whose {@code tensorFields}, in order, become tensors. */
    public PackFn(Schema schema, List<String> tensorFields, int maxRows) {
      this(schema, tensorFields, maxRows, 0);
    }

    /** As above; a block closes too once a row comes {@code maxWaitMillis} after its first. */
    public PackFn(Schema schema, List<String> tensorFields, int maxRows, long maxWaitMillis) {
      this.split = new RowSplit(schema, tensorFields);
      this.maxRows = maxRows;
      this.maxWaitNanos = maxWaitMillis * 1_000_000L;
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
      long now = System.nanoTime();
      // A row long after the one before it: no row may follow soon to close its block.
      boolean alone = maxWaitNanos > 0 && (lastRowNanos == 0 || now - lastRowNanos >= maxWaitNanos);
      lastRowNanos = now;
      Block block = blocks.get(window);
      if (block == null) {
        block = new Block(split, Math.min(maxRows, Math.max(lastRows, FIRST_BLOCK_ROWS)));
        blocks.put(window, block);
      }
      block.add(row, timestamp);
      if (block.count == maxRows
          || (maxWaitNanos > 0 && (alone || now - block.opened >= maxWaitNanos))) {
        blocks.remove(window);
        lastRows = block.count;
        // A block's timestamp is its earliest row's, at most this row's: hence the skew.
        out.outputWithTimestamp(block.toRow(), block.earliest);
      }
    }

    @FinishBundle
    public void finishBundle(FinishBundleContext context) throws IOException {
      Map<BoundedWindow, Block> blocks = openBlocks();
      for (Map.Entry<BoundedWindow, Block> entry : blocks.entrySet()) {
        Block block = entry.getValue();
        context.output(block.toRow(), block.earliest, entry.getKey());
      }
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
  }

  /** The rows a PackFn's first block makes room for; it grows if more come. */
  static final int FIRST_BLOCK_ROWS = 16;

  /** One block being filled. */
  private static final class Block {
    private final RowSplit split;
    private final List<Row> rows;
    private ByteBuffer timestamps;
    private final List<Packer> packers = new ArrayList<>();
    private boolean packed = true; // false once a row's values do not make tensors
    private int count;
    private Instant earliest = BoundedWindow.TIMESTAMP_MAX_VALUE;
    final long opened = System.nanoTime();

    /** A block with room for {@code expectedRows} rows at first. */
    Block(RowSplit split, int expectedRows) {
      this.split = split;
      this.rows = new ArrayList<>(expectedRows);
      this.timestamps = ByteBuffer.allocate(8 * expectedRows).order(ByteOrder.LITTLE_ENDIAN);
      for (Tensor tensor : split.tensors) {
        packers.add(new Packer(tensor, expectedRows));
      }
    }

    void add(Row row, Instant timestamp) {
      rows.add(row);
      timestamps = withRoom(timestamps, Long.BYTES);
      timestamps.putLong(timestamp.getMillis());
      if (timestamp.isBefore(earliest)) {
        earliest = timestamp;
      }
      for (int i = 0; packed && i < packers.size(); i++) {
        packed = packers.get(i).add(row.getValue(split.tensorFields[i]));
      }
      count++;
    }

    /** The block: rows without their tensor fields beside the tensors, else whole rows. */
    Row toRow() throws IOException {
      List<List<Long>> shapes = new ArrayList<>();
      List<byte[]> tensors = new ArrayList<>();
      BytesOut encoded = new BytesOut(16 * count);
      if (packed) {
        for (Packer packer : packers) {
          shapes.add(packer.shape());
          tensors.add(packer.bytes());
        }
        for (Row row : rows) {
          split.restCoder.encode(split.restOf(row), encoded);
        }
      } else {
        for (Row row : rows) {
          split.rowCoder.encode(row, encoded);
        }
      }
      return Row.withSchema(IN)
          .addValues((long) count, encoded.toByteArray(), prefix(timestamps), shapes, tensors)
          .build();
    }
  }

  /** One tensor of a block being filled: the first row's value fixes the shape of every row's. */
  private static final class Packer {
    private final Tensor tensor;
    private final int expectedRows;
    private long @Nullable [] shape;
    private ByteBuffer buffer = ByteBuffer.allocate(0);

    Packer(Tensor tensor, int expectedRows) {
      this.tensor = tensor;
      this.expectedRows = expectedRows;
    }

    /** Adds a row's value; false when it is null or its shape is not the first row's. */
    boolean add(@Nullable Object value) {
      if (shape == null) {
        shape = shapeOf(value);
        if (shape == null) {
          return false;
        }
        long values = 1;
        for (long d : shape) {
          values *= d;
        }
        // Room for the rows expected, up to 1 MB at first; more as rows come.
        long rowBytes = values * tensor.bytes();
        long capacity = Math.min(rowBytes * expectedRows, Math.max(rowBytes, 1 << 20));
        buffer = ByteBuffer.allocate(Math.toIntExact(capacity)).order(ByteOrder.LITTLE_ENDIAN);
      }
      return write(value, 0);
    }

    private long @Nullable [] shapeOf(@Nullable Object value) {
      long[] dims = new long[tensor.rank];
      Object level = value;
      for (int d = 0; d < tensor.rank; d++) {
        if (!(level instanceof Collection)) {
          return null; // a null
        }
        Collection<?> values = (Collection<?>) level;
        dims[d] = values.size();
        // An empty array leaves the deeper dimensions 0.
        level = values.isEmpty() ? Collections.emptyList() : values.iterator().next();
      }
      return value == null ? null : dims;
    }

    private boolean write(@Nullable Object value, int depth) {
      if (value == null) {
        return false;
      }
      if (depth == tensor.rank) { // a scalar field
        ensureRoom(tensor.bytes());
        put(value);
        return true;
      }
      Collection<?> values = (Collection<?>) value;
      long[] dims = shape;
      if (dims == null || values.size() != dims[depth]) {
        return false;
      }
      if (depth == tensor.rank - 1) {
        ensureRoom(values.size() * tensor.bytes());
        for (Object v : values) {
          if (v == null) {
            return false;
          }
          put(v);
        }
        return true;
      }
      for (Object v : values) {
        if (!write(v, depth + 1)) {
          return false;
        }
      }
      return true;
    }

    private void put(Object value) {
      switch (tensor.element) {
        case FLOAT:
          buffer.putFloat((Float) value);
          break;
        case DOUBLE:
          buffer.putDouble((Double) value);
          break;
        case INT32:
          buffer.putInt((Integer) value);
          break;
        case INT64:
          buffer.putLong((Long) value);
          break;
        case INT16:
          buffer.putShort((Short) value);
          break;
        case BYTE:
          buffer.put((Byte) value);
          break;
        default: // BOOLEAN
          buffer.put((byte) ((Boolean) value ? 1 : 0));
      }
    }

    private void ensureRoom(int bytes) {
      buffer = withRoom(buffer, bytes);
    }

    List<Long> shape() {
      List<Long> dims = new ArrayList<>();
      if (shape != null) {
        for (long d : shape) {
          dims.add(d);
        }
      }
      return dims;
    }

    byte[] bytes() {
      return prefix(buffer);
    }
  }

  /** {@code buffer}, or a copy of it twice as large, with room for {@code bytes} more. */
  private static ByteBuffer withRoom(ByteBuffer buffer, int bytes) {
    if (buffer.remaining() >= bytes) {
      return buffer;
    }
    ByteBuffer larger =
        ByteBuffer.allocate(Math.max(2 * buffer.capacity(), buffer.position() + bytes))
            .order(ByteOrder.LITTLE_ENDIAN);
    buffer.flip();
    larger.put(buffer);
    return larger;
  }

  private static byte[] prefix(ByteBuffer buffer) {
    byte[] bytes = new byte[buffer.position()];
    System.arraycopy(buffer.array(), 0, bytes, 0, bytes.length);
    return bytes;
  }

  /**
   * Turns Python's output blocks into output Rows: the input fields, then each output field from
   * its tensor (the output schema's fields after the input's, but {@code model_id}, in order), and
   * {@code model_id}.
   */
  public static final class UnpackFn extends DoFn<Row, Row> {
    private final RowSplit split;
    private final Schema outputSchema;
    private final int inputFields;
    private final List<Tensor> outputs = new ArrayList<>();
    private final int modelIdField;

    /** Output Rows of {@code outputSchema} from blocks of {@code inputSchema} rows. */
    public UnpackFn(Schema inputSchema, List<String> tensorFields, Schema outputSchema) {
      this.split = new RowSplit(inputSchema, tensorFields);
      this.outputSchema = outputSchema;
      this.inputFields = inputSchema.getFieldCount();
      List<Field> fields = outputSchema.getFields();
      int modelId = -1;
      for (int f = inputFields; f < fields.size(); f++) {
        if (fields.get(f).getName().equals(MODEL_ID)) {
          modelId = f;
        } else {
          outputs.add(Tensor.of(outputSchema, fields.get(f).getName()));
        }
      }
      this.modelIdField = modelId;
    }

    @ProcessElement
    public void process(@Element Row block, OutputReceiver<Row> out) throws IOException {
      // INT64: Python reads a negative INT32 as unsigned.
      int count = Math.toIntExact(block.getInt64(COUNT));
      String modelId = block.getString(MODEL_ID);
      LongBuffer timestamps = le(block.getBytes(TIMESTAMPS)).asLongBuffer();
      ByteBuffer skipped = le(block.getBytes(SKIPPED));
      List<Reader> readers = readers(block, SHAPES, TENSORS, outputs, count, "output");
      if (timestamps.capacity() != count) {
        throw mismatch(count + " rows and " + timestamps.capacity() + " timestamps");
      }
      Collection<byte[]> inputTensors = block.getArray(INPUT_TENSORS);
      boolean packed = inputTensors != null && !inputTensors.isEmpty();
      List<Reader> inputs =
          packed
              ? readers(block, INPUT_SHAPES, INPUT_TENSORS, split.tensors, count, "input")
              : List.of();
      RowCoder coder = packed ? split.restCoder : split.rowCoder;
      InputStream rows = new BytesIn(block.getBytes(ROWS));
      int nextSkipped = skipped.remaining() >= 4 ? skipped.getInt() : -1;
      @Nullable Object[] tensorValues = new Object[inputs.size()];
      for (int i = 0; i < count; i++) {
        Row input = coder.decode(rows);
        boolean skip = i == nextSkipped;
        for (int t = 0; t < inputs.size(); t++) {
          tensorValues[t] = inputs.get(t).next(i, skip);
        }
        List<@Nullable Object> values = new ArrayList<>(outputSchema.getFieldCount());
        if (packed) {
          for (int f = 0, r = 0; f < inputFields; f++) {
            int tensor = split.fieldTensors[f];
            values.add(tensor >= 0 ? tensorValues[tensor] : input.getValue(r++));
          }
        } else {
          values.addAll(input.getValues());
        }
        for (int f = inputFields, next = 0; f < outputSchema.getFieldCount(); f++) {
          values.add(f == modelIdField ? modelId : readers.get(next++).next(i, skip));
        }
        if (skip) {
          nextSkipped = skipped.remaining() >= 4 ? skipped.getInt() : -1;
          continue;
        }
        // The values are of the schema's types: decoded, or read from tensors of those types.
        out.outputWithTimestamp(
            Row.withSchema(outputSchema).attachValues(values), new Instant(timestamps.get(i)));
      }
    }

    private static List<Reader> readers(
        Row block,
        String shapesField,
        String tensorsField,
        List<Tensor> expected,
        int count,
        String what) {
      Collection<Collection<Long>> shapes = block.getArray(shapesField);
      Collection<byte[]> tensors = block.getArray(tensorsField);
      if (shapes == null
          || tensors == null
          || shapes.size() != expected.size()
          || tensors.size() != expected.size()) {
        throw mismatch(
            (tensors == null ? 0 : tensors.size())
                + " "
                + what
                + " tensors where this Java version reads "
                + expected.size());
      }
      List<Reader> readers = new ArrayList<>();
      java.util.Iterator<Collection<Long>> shape = shapes.iterator();
      java.util.Iterator<byte[]> data = tensors.iterator();
      for (Tensor tensor : expected) {
        readers.add(new Reader(tensor, count, shape.next(), data.next()));
      }
      return readers;
    }

    private static IllegalStateException mismatch(String what) {
      return new IllegalStateException(
          "A block from Python does not fit the output schema (" + what + "); " + MISMATCH);
    }
  }

  /** Reads one tensor row by row. */
  private static final class Reader {
    private final Tensor tensor;
    private final ByteBuffer data;
    private final long[] shapes; // one row's shape, or each row's in turn
    private final boolean each;

    Reader(Tensor tensor, int count, Collection<Long> shape, byte[] bytes) {
      this.tensor = tensor;
      this.data = le(bytes);
      this.shapes = shape.stream().mapToLong(Long::longValue).toArray();
      this.each = shapes.length != tensor.rank;
      long values = 0;
      for (int i = 0; i < count; i++) {
        values += size(i);
      }
      if ((each && shapes.length != tensor.rank * count)
          || values * tensor.bytes() != bytes.length) {
        throw UnpackFn.mismatch(
            String.format(
                "'%s': %d bytes of %s of shape %s for %d rows",
                tensor.field,
                bytes.length,
                tensor.element,
                java.util.Arrays.toString(shapes),
                count));
      }
    }

    private long size(int row) {
      long size = 1;
      int base = each ? row * tensor.rank : 0;
      for (int d = 0; d < tensor.rank && base + d < shapes.length; d++) {
        size *= shapes[base + d];
      }
      return size;
    }

    /** Row {@code row}'s value (read in order); null, and skipped over, when {@code skip}. */
    @Nullable Object next(int row, boolean skip) {
      if (skip) {
        data.position(Math.toIntExact(data.position() + size(row) * tensor.bytes()));
        return null;
      }
      return read(each ? row * tensor.rank : 0, 0);
    }

    private Object read(int base, int depth) {
      if (depth == tensor.rank) {
        switch (tensor.element) {
          case FLOAT:
            return data.getFloat();
          case DOUBLE:
            return data.getDouble();
          case INT32:
            return data.getInt();
          case INT64:
            return data.getLong();
          case INT16:
            return data.getShort();
          case BYTE:
            return data.get();
          default: // BOOLEAN
            return data.get() != 0;
        }
      }
      int n = Math.toIntExact(shapes[base + depth]);
      if (depth == tensor.rank - 1) {
        int offset = data.position();
        data.position(offset + n * tensor.bytes());
        return new TensorList(tensor.element, data.array(), offset, n);
      }
      List<Object> values = new ArrayList<>(n);
      for (int k = 0; k < n; k++) {
        values.add(read(base, depth + 1));
      }
      return Collections.unmodifiableList(values);
    }
  }

  /**
   * One row's innermost array of a tensor as a read-only list over its part of the block's
   * little-endian bytes (not copied), each number boxed when read. A Row holds it as the value of
   * an array field; equal to any list of the same numbers, and Java-serialized as an {@link
   * ArrayList} (its own values, not the block's).
   */
  static final class TensorList extends AbstractList<Object> implements RandomAccess, Serializable {
    private static final long serialVersionUID = 1L;
    private static final VarHandle FLOATS = view(float[].class);
    private static final VarHandle DOUBLES = view(double[].class);
    private static final VarHandle INTS = view(int[].class);
    private static final VarHandle LONGS = view(long[].class);
    private static final VarHandle SHORTS = view(short[].class);

    private final TypeName element;
    private final byte[] data;
    private final int offset;
    private final int size;

    /** The {@code size} numbers of {@code data} from byte {@code offset}. */
    TensorList(TypeName element, byte[] data, int offset, int size) {
      Objects.checkFromIndexSize(offset, size * ELEMENT_BYTES.get(element), data.length);
      this.element = element;
      this.data = data;
      this.offset = offset;
      this.size = size;
    }

    private static VarHandle view(Class<?> array) {
      return MethodHandles.byteArrayViewVarHandle(array, ByteOrder.LITTLE_ENDIAN);
    }

    @Override
    public Object get(int index) {
      Objects.checkIndex(index, size);
      switch (element) {
        case FLOAT:
          return (float) FLOATS.get(data, offset + (index << 2));
        case DOUBLE:
          return (double) DOUBLES.get(data, offset + (index << 3));
        case INT32:
          return (int) INTS.get(data, offset + (index << 2));
        case INT64:
          return (long) LONGS.get(data, offset + (index << 3));
        case INT16:
          return (short) SHORTS.get(data, offset + (index << 1));
        case BYTE:
          return data[offset + index];
        default: // BOOLEAN
          return data[offset + index] != 0;
      }
    }

    @Override
    public int size() {
      return size;
    }

    private Object writeReplace() {
      return new ArrayList<>(this);
    }
  }

  /**
   * A growing byte array to encode rows into; unlike {@link java.io.ByteArrayOutputStream}, not
   * synchronized (a coder writes a varint a byte at a time: a lock per byte).
   */
  static final class BytesOut extends OutputStream {
    private byte[] bytes;
    private int size;

    BytesOut(int capacity) {
      bytes = new byte[Math.max(capacity, 16)];
    }

    @Override
    public void write(int b) {
      if (size == bytes.length) {
        bytes = java.util.Arrays.copyOf(bytes, 2 * bytes.length);
      }
      bytes[size++] = (byte) b;
    }

    @Override
    public void write(byte[] b, int off, int len) {
      Objects.checkFromIndexSize(off, len, b.length);
      if (size + len > bytes.length) {
        bytes = java.util.Arrays.copyOf(bytes, Math.max(2 * bytes.length, size + len));
      }
      System.arraycopy(b, off, bytes, size, len);
      size += len;
    }

    byte[] toByteArray() {
      return java.util.Arrays.copyOf(bytes, size);
    }
  }

  /** Reads a byte array; unlike {@link java.io.ByteArrayInputStream}, not synchronized. */
  static final class BytesIn extends InputStream {
    private final byte[] bytes;
    private int position;

    BytesIn(byte[] bytes) {
      this.bytes = bytes;
    }

    @Override
    public int read() {
      return position < bytes.length ? bytes[position++] & 0xff : -1;
    }

    @Override
    public int read(byte[] b, int off, int len) {
      Objects.checkFromIndexSize(off, len, b.length);
      if (len == 0) {
        return 0;
      }
      if (position >= bytes.length) {
        return -1;
      }
      int n = Math.min(len, bytes.length - position);
      System.arraycopy(bytes, position, b, off, n);
      position += n;
      return n;
    }

    @Override
    public int available() {
      return bytes.length - position;
    }
  }

  private static ByteBuffer le(byte[] bytes) {
    return ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
  }
}
