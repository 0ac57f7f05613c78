package dev.xinfer;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * Every framework through the same Java API on the embedded portable Flink runner: each model was
 * trained by set-up on the digits data, and every output is checked against what that framework
 * computes for the record in plain Python (the {@code .reference.csv} files set-up writes).
 */
@RunWith(JUnit4.class)
public class FrameworksIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(4);

  private static final int N = 300;

  private static void runAndCheck(
      RunInference inference, String reference, String modelId, boolean logScores) {
    Pipeline p = TestRunners.pipeline("FlinkRunner", "--parallelism=1");
    PCollection<Row> predictions =
        p.apply(Create.of(Digits.exampleRows(N)).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(inference.withMaxBatchSize(64));
    PAssert.that(predictions).satisfies(Digits.matchesReference(N, reference, modelId, logScores));
    p.run().waitUntilFinish();
  }

  private static void runAndCheck(RunInference inference, String modelFile) {
    runAndCheck(inference, modelFile, modelFile, false);
  }

  @Test
  public void tensorFlowSavedModel() {
    runAndCheck(RunInference.withModel(Digits.model("digits-mlp")), "digits-mlp");
  }

  @Test
  public void kerasFile() {
    runAndCheck(RunInference.withModel(Digits.model("digits-mlp.keras")), "digits-mlp.keras");
  }

  @Test
  public void pyTorchTorchScript() {
    runAndCheck(RunInference.withModel(Digits.model("digits-torch.pt")), "digits-torch.pt");
  }

  @Test
  public void pyTorchStateDictWithItsModelClass() {
    Model model =
        Model.of(Digits.model("digits-torch-state.pt"))
            .withModelClass("xinfer.examples.nets:DigitsNet", Map.of("hidden", 32));
    runAndCheck(RunInference.withModel(model), "digits-torch-state.pt");
  }

  @Test
  public void inferenceArgsReachTheModelCall() {
    Model model =
        Model.of(Digits.model("digits-torch-state.pt"))
            .withModelClass("xinfer.examples.nets:DigitsNet", Map.of("hidden", 32));
    runAndCheck(
        RunInference.withModel(model).withInferenceArgs(Map.of("temperature", 2.0)),
        "digits-torch-state.pt.t2",
        "digits-torch-state.pt",
        false);
  }

  @Test
  public void scikitLearnJoblib() {
    runAndCheck(
        RunInference.withModel(Digits.model("digits-sklearn.joblib")), "digits-sklearn.joblib");
  }

  @Test
  public void onnxRuntime() {
    runAndCheck(RunInference.withModel(Digits.model("digits-sklearn.onnx")), "digits-sklearn.onnx");
  }

  /**
   * Python pre- and post-processing hooks: the input holds the pixels as text, which {@code
   * parse_pixels} turns into the model input; {@code log_scores} turns probabilities into
   * log-probabilities.
   */
  @Test
  public void preAndPostProcessingHooks() {
    Schema textSchema =
        Schema.builder()
            .addInt64Field("id")
            .addInt64Field("label")
            .addStringField("pixels")
            .build();
    List<Row> rows = new ArrayList<>();
    for (Row example : Digits.exampleRows(N)) {
      String pixels =
          example.<Float>getArray("features").stream()
              .map(v -> Float.toString(v))
              .collect(Collectors.joining(" "));
      rows.add(
          Row.withSchema(textSchema)
              .addValues(example.getInt64("id"), example.getInt64("label"), pixels)
              .build());
    }
    Pipeline p = TestRunners.pipeline("FlinkRunner", "--parallelism=1");
    PCollection<Row> predictions =
        p.apply(Create.of(rows).withRowSchema(textSchema))
            .apply(
                RunInference.withModel(Digits.model("digits-mlp"))
                    .withPreprocess("xinfer.examples.hooks:parse_pixels")
                    .withPostprocess("xinfer.examples.hooks:log_scores"));
    PAssert.that(predictions)
        .satisfies(Digits.matchesReference(N, "digits-mlp", "digits-mlp", true));
    p.run().waitUntilFinish();
  }
}
