package dev.xinfer;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;

import dev.xinfer.runtime.python.ServiceSecret;
import dev.xinfer.testing.Digits;
import dev.xinfer.testing.HandStartedServices;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.Pipeline.PipelineExecutionException;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * RunInference end to end on the embedded portable Flink runner, with the real Python expansion
 * service and worker pool and the real TensorFlow model. The services are started once for this JVM
 * and shared by every test.
 */
@RunWith(JUnit4.class)
public class RunInferenceIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(4);

  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  private static final Schema EXAMPLE = Digits.EXAMPLE_SCHEMA;
  private static final Schema NULLABLE_EXAMPLE =
      Schema.builder()
          .addInt64Field("id")
          .addNullableField("features", FieldType.array(FieldType.FLOAT))
          .build();

  private static Pipeline flinkPipeline() {
    return TestRunners.pipeline("FlinkRunner", "--parallelism=1");
  }

  private static List<Row> examples(int n) {
    return Digits.exampleRows(n);
  }

  @Test
  public void wrongFeatureLengthFailsTheRunNamingRecordFieldAndShape() {
    Pipeline p = flinkPipeline();
    List<Row> input = new ArrayList<>(examples(5));
    input.add(Row.withSchema(EXAMPLE).addValues(9001L, 3L, Collections.nCopies(63, 1.0f)).build());
    p.apply(Create.of(input).withRowSchema(EXAMPLE))
        .apply(RunInference.withModel(Digits.model().toString()));
    PipelineExecutionException e =
        assertThrows(PipelineExecutionException.class, () -> p.run().waitUntilFinish());
    assertThat(e.getMessage(), containsString("The pipeline failed on FlinkRunner"));
    assertThat(
        e.getMessage(),
        containsString("record {id=9001, label=3}: field 'features' has 63 values"));
    assertThat(e.getMessage(), containsString("the model input (None, 64) needs 64 per record"));
  }

  @Test
  public void nullFeaturesFailTheRunNamingTheRecord() {
    Pipeline p = flinkPipeline();
    List<Row> input =
        List.of(
            Row.withSchema(NULLABLE_EXAMPLE).addValues(1L, Collections.nCopies(64, 0.0f)).build(),
            Row.withSchema(NULLABLE_EXAMPLE).addValues(2L, null).build());
    p.apply(Create.of(input).withRowSchema(NULLABLE_EXAMPLE))
        .apply(RunInference.withModel(Digits.model().toString()));
    PipelineExecutionException e =
        assertThrows(PipelineExecutionException.class, () -> p.run().waitUntilFinish());
    assertThat(e.getMessage(), containsString("record {id=2}: field 'features' is null"));
  }

  /**
   * When {@code waitUntilFinish} returns, the job's embedded Flink has shut down: a program that
   * exits then (the launcher calls {@code System.exit}) must not run the JVM shutdown hooks of
   * Flink's still-live Pekko actor systems while Flink closes the class loader they load from (a
   * {@code NoClassDefFoundError} from "flink-shutdown-hook-1" on a clean run, seen in CI).
   */
  @Test
  public void anEndedRunLeavesNoEmbeddedFlinkRunning() throws Exception {
    Pipeline p = flinkPipeline();
    p.apply(Create.of(examples(5)).withRowSchema(EXAMPLE))
        .apply(RunInference.withModel(Digits.model().toString()));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
    assertEquals(List.of(), actorSystemShutdownHooks());
  }

  /**
   * The JVM shutdown hooks Pekko registers for each live actor system ("flink-shutdown-hook-1").
   */
  private static List<String> actorSystemShutdownHooks() throws ReflectiveOperationException {
    Class<?> hooksClass = Class.forName("java.lang.ApplicationShutdownHooks");
    java.lang.reflect.Field field = hooksClass.getDeclaredField("hooks");
    field.setAccessible(true);
    List<String> names = new ArrayList<>();
    synchronized (hooksClass) {
      for (Object hook : ((Map<?, ?>) field.get(null)).keySet()) {
        String name = ((Thread) hook).getName();
        if (name.contains("-shutdown-hook-")) {
          names.add(name);
        }
      }
    }
    return names;
  }

  @Test
  public void missingModelFailsAtConstructionWithItsPath() {
    Pipeline p = flinkPipeline();
    PCollection<Row> rows = p.apply(Create.of(examples(1)).withRowSchema(EXAMPLE));
    RuntimeException e =
        assertThrows(
            RuntimeException.class, () -> rows.apply(RunInference.withModel("/nonexistent/model")));
    assertThat(e.getMessage(), containsString("no model at '/nonexistent/model'"));
  }

  @Test
  public void anExpansionServiceStartedByHandIsUsedWithItsSecret() throws Exception {
    try (HandStartedServices services =
        HandStartedServices.start(System.getProperty("xinfer.python"), tmp.getRoot().toPath())) {
      Pipeline p = flinkPipeline();
      PCollection<Row> out =
          p.apply(Create.of(examples(20)).withRowSchema(EXAMPLE))
              .apply(
                  RunInference.withModel(Model.of(Digits.model().toString()).withId("digits-v2"))
                      .withExpansionService(services.address(), services.secretFile().toString()));
      PAssert.that(out)
          .satisfies(
              rows -> {
                int n = 0;
                for (Row row : rows) {
                  assertEquals("digits-v2", row.getString("model_id"));
                  n++;
                }
                assertEquals(20, n);
                return null;
              });
      assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
      // The transform was expanded there, not by this JVM's own services.
      assertThat(
          new String(
              Files.readAllBytes(tmp.getRoot().toPath().resolve("hand-started-services.log")),
              StandardCharsets.UTF_8),
          containsString("Expansion service on " + services.address()));
    }
  }

  @Test
  public void anExpansionServiceRefusesACallerWithoutItsSecret() throws Exception {
    try (HandStartedServices services =
        HandStartedServices.start(System.getProperty("xinfer.python"), tmp.getRoot().toPath())) {
      Path wrong = tmp.getRoot().toPath().resolve("wrong.secret");
      Files.writeString(wrong, ServiceSecret.generate());
      Files.setPosixFilePermissions(wrong, PosixFilePermissions.fromString("rw-------"));
      RuntimeException e =
          refusal(
              RunInference.withModel(Digits.model().toString())
                  .withExpansionService(services.address(), wrong.toString()));
      assertThat(e.toString(), containsString("UNAUTHENTICATED"));
      assertThat(e.toString(), containsString("does not carry the secret of the run"));
    }
  }

  @Test
  public void aModelClassFromAModuleNotAllowedIsRefusedBeforeItIsImported() {
    Path marker = tmp.getRoot().toPath().resolve("marker");
    RuntimeException e =
        refusal(
            RunInference.withModel(
                Model.of(Digits.modelsDir().resolve("digits-torch-state.pt").toString())
                    .withModelClass("os:system", Map.of("command", "touch " + marker))));
    assertThat(e.getMessage(), containsString("module 'os', which the operator has not allowed"));
    assertThat(e.getMessage(), containsString("--xinferAllowedModules"));
    assertFalse(Files.exists(marker));
  }

  @Test
  public void aHookFromAModuleNotAllowedIsRefused() {
    RuntimeException e =
        refusal(
            RunInference.withModel(Digits.model().toString())
                .withPreprocess("subprocess:getoutput"));
    assertThat(e.getMessage(), containsString("preprocess 'subprocess:getoutput'"));
    assertThat(e.getMessage(), containsString("--xinferAllowedModules"));
  }

  /** What applying {@code inference} to two rows of a Flink pipeline fails with (construction). */
  private RuntimeException refusal(RunInference inference) {
    PCollection<Row> rows = flinkPipeline().apply(Create.of(examples(2)).withRowSchema(EXAMPLE));
    return assertThrows(RuntimeException.class, () -> rows.apply(inference));
  }
}
