package dev.xinfer.runtime;

import static org.apache.beam.sdk.util.Preconditions.checkStateNotNull;

import dev.xinfer.XinferOptions;
import dev.xinfer.runtime.direct.DirectStage;
import dev.xinfer.runtime.python.PythonExpansion;
import dev.xinfer.runtime.python.PythonServices;
import dev.xinfer.runtime.python.RowBlocks;
import dev.xinfer.runtime.python.ServiceSecret;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.Field;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TupleTag;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The expansion plumbing of {@code RunInference}: applies xinfer's Python transform to a
 * PCollection on whichever path the pipeline's runner takes (cross-language for Flink and Spark,
 * {@link DirectStage} for the DirectRunner), and hands back its outputs by name with the coders
 * this Java version declares.
 *
 * <ul>
 *   <li>The services: the run's own ({@link PythonServices#shared}), or one started by hand.
 *   <li>The row blocks ({@link RowBlocks}): rows packed before the Python stage and unpacked after
 *       it, when the caller allows them and {@code --xinferRowBlocks} is on.
 *   <li>The outputs: {@value #PREDICTIONS} and, with a dead-letter output, {@value #FAILURES}; a
 *       Python transform with a single output names its predictions. Each is checked against the
 *       schema Java expects, so that Java and Python halves of different versions fail at
 *       construction.
 * </ul>
 */
@Internal
public final class PythonTransforms {
  /** The Python transform's output of predictions. */
  public static final String PREDICTIONS = "predictions";

  /** The Python transform's dead-letter output. */
  public static final String FAILURES = "failures";

  private static final Duration REACHABLE_TIMEOUT = Duration.ofSeconds(15);

  private PythonTransforms() {}

  /**
   * Where the Python transform is expanded: the run's own services when {@code hostPort} is null,
   * else an expansion service started by hand, with the secret in {@code secretFile} ({@code
   * setting} names the user's call, for messages).
   */
  public static final class Service {
    private final @Nullable String hostPort;
    private final @Nullable String secretFile;
    private final String setting;

    private Service(@Nullable String hostPort, @Nullable String secretFile, String setting) {
      this.hostPort = hostPort;
      this.secretFile = secretFile;
      this.setting = setting;
    }

    /** The services xinfer starts for the run. */
    public static Service ofRun() {
      return new Service(null, null, "");
    }

    /** An expansion service started by hand; {@code setting} is the call that named it. */
    public static Service at(String hostPort, String secretFile, String setting) {
      return new Service(hostPort, secretFile, setting);
    }
  }

  /**
   * How rows may cross to Python in blocks: the rows' schema, the fields that become tensors (the
   * model's inputs, in order), the largest block, and the schema of the rows unpacked after it (its
   * fields after the rows' are the outputs Python returns as tensors, and {@code model_id}).
   */
  public static final class Blocks {
    private final Schema rowSchema;
    private final List<String> tensorFields;
    private final int maxBlockSize;
    private final Schema outputSchema;

    private Blocks(
        Schema rowSchema, List<String> tensorFields, int maxBlockSize, Schema outputSchema) {
      this.rowSchema = rowSchema;
      this.tensorFields = List.copyOf(tensorFields);
      this.maxBlockSize = maxBlockSize;
      this.outputSchema = outputSchema;
    }

    /**
     * Blocks of {@code rowSchema} rows, with {@code tensorFields} as tensors; each of them and each
     * output field must be a tensor type ({@link RowBlocks#isTensor}).
     */
    public static Blocks of(
        Schema rowSchema, List<String> tensorFields, int maxBlockSize, Schema outputSchema) {
      return new Blocks(rowSchema, tensorFields, maxBlockSize, outputSchema);
    }
  }

  /**
   * Applies Python transform {@code constructor} with {@code kwargs} to {@code input}.
   *
   * @param blocks how rows may cross in blocks, or null when they cross one by one
   * @param predictionCoder the coder of the predictions (checked against what Python declares)
   * @param failureCoder the coder of the dead-letter output, or null without one
   * @return the predictions under {@value #PREDICTIONS} and, with {@code failureCoder}, the
   *     failures under {@value #FAILURES}
   */
  public static PCollectionTuple apply(
      PCollection<?> input,
      String constructor,
      Map<String, Object> kwargs,
      Service service,
      @Nullable Blocks blocks,
      Coder<?> predictionCoder,
      @Nullable Coder<Row> failureCoder) {
    PipelineOptions options = input.getPipeline().getOptions();
    RunnerBootstrap.prepare(options);
    String address = service.hostPort;
    String secret;
    if (address == null) {
      PythonServices services = PythonServices.shared(options.as(XinferOptions.class));
      address = services.expansionServiceAddress();
      secret = services.secret();
    } else {
      secret =
          ServiceSecret.read(
              checkStateNotNull(service.secretFile, "%s needs a secret file", service.setting),
              service.setting);
      PythonServices.checkReachable(address, REACHABLE_TIMEOUT);
    }
    Map<String, Object> pythonKwargs = new LinkedHashMap<>(kwargs);
    @Nullable Blocks packed = options.as(XinferOptions.class).getXinferRowBlocks() ? blocks : null;
    PCollection<?> pythonInput = input;
    if (packed != null) {
      pythonKwargs.put("packed", true);
      pythonKwargs.put("input_schema", RowBlocks.schemaForPython(packed.rowSchema));
      @SuppressWarnings("unchecked")
      PCollection<Row> rows = (PCollection<Row>) input;
      pythonInput =
          rows.apply(
                  "PackRows",
                  ParDo.of(
                      new RowBlocks.PackFn(
                          packed.rowSchema,
                          packed.tensorFields,
                          packed.maxBlockSize,
                          RunnerBootstrap.movesDataWithinBundles(options)
                              ? RowBlocks.STREAMING_BLOCK_WAIT_MILLIS
                              : 0)))
              .setRowSchema(RowBlocks.IN);
    }
    PTransform<PCollection<?>, PCollectionTuple> python =
        PythonExpansion.of(constructor, pythonKwargs, address, secret);
    PCollectionTuple expanded =
        RunnerBootstrap.runsPythonStageInDoFn(options)
            ? DirectStage.apply(pythonInput, "Python", python, options.getRunner().getSimpleName())
            : pythonInput.apply("Python", python);
    Map<String, PCollection<?>> outputs = outputsOf(expanded);

    PCollection<?> predictions = outputs.get(PREDICTIONS);
    checkStateNotNull(predictions, "the Python transform returned no predictions: %s", outputs);
    if (packed != null) {
      Coder<Row> blockCoder = RowCoder.of(RowBlocks.OUT);
      checkSchema(predictions, blockCoder);
      setCoder(predictions, blockCoder);
      @SuppressWarnings("unchecked")
      PCollection<Row> outputBlocks = (PCollection<Row>) predictions;
      predictions =
          outputBlocks
              .apply(
                  "UnpackRows",
                  ParDo.of(
                      new RowBlocks.UnpackFn(
                          packed.rowSchema, packed.tensorFields, packed.outputSchema)))
              .setRowSchema(packed.outputSchema);
    }
    checkSchema(predictions, predictionCoder);
    setCoder(predictions, predictionCoder);
    PCollectionTuple tuple = PCollectionTuple.of(new TupleTag<>(PREDICTIONS), predictions);
    if (failureCoder != null) {
      PCollection<?> failures = outputs.get(FAILURES);
      checkStateNotNull(failures, "the Python transform returned no failures: %s", outputs);
      checkSchema(failures, failureCoder);
      setCoder(failures, failureCoder);
      tuple = tuple.and(new TupleTag<>(FAILURES), failures);
    }
    return tuple;
  }

  /** The Python transform's outputs by name; a single output is the predictions. */
  static Map<String, PCollection<?>> outputsOf(PCollectionTuple output) {
    Map<String, PCollection<?>> outputs = new LinkedHashMap<>();
    if (output.getAll().size() == 1) {
      outputs.put(PREDICTIONS, output.getAll().values().iterator().next());
    } else {
      output.getAll().forEach((tag, pc) -> outputs.put(tag.getId(), pc));
    }
    return outputs;
  }

  /** Sets a coder on a PCollection whose element type is not known here. */
  @SuppressWarnings({"unchecked", "rawtypes"})
  public static void setCoder(PCollection<?> pc, Coder<?> coder) {
    ((PCollection) pc).setCoder(coder);
  }

  /** Fails when the Python side's rows differ from what this Java version declares. */
  static void checkSchema(PCollection<?> pc, Coder<?> expected) {
    Schema actual = rowSchemaIn(pc.getCoder());
    Schema wanted = rowSchemaIn(expected);
    if (actual == null || wanted == null || !sameFields(actual, wanted)) {
      throw new IllegalStateException(
          String.format(
              "The Python side of RunInference returned %s, but this Java version expects %s. "
                  + "The Java and Python halves of xinfer are from different versions: re-run "
                  + "./xinfer setup (or reinstall ./python-expansion).",
              actual == null ? pc.getCoder() : actual, wanted));
    }
  }

  private static @Nullable Schema rowSchemaIn(Coder<?> coder) {
    if (coder instanceof KvCoder) {
      coder = ((KvCoder<?, ?>) coder).getValueCoder();
    }
    return coder instanceof RowCoder ? ((RowCoder) coder).getSchema() : null;
  }

  private static boolean sameFields(Schema actual, Schema expected) {
    return names(actual).equals(names(expected))
        && actual.getFields().stream()
            .allMatch(
                f ->
                    f.getType()
                        .withNullable(false)
                        .equivalent(
                            expected.getField(f.getName()).getType().withNullable(false),
                            Schema.EquivalenceNullablePolicy.IGNORE));
  }

  private static String names(Schema schema) {
    return schema.getFields().stream().map(Field::getName).collect(Collectors.joining(","));
  }
}
