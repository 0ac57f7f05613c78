package dev.xinfer;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.Failures;
import dev.xinfer.testing.Stalls;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.testing.TestPipeline;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.Keys;
import org.apache.beam.sdk.transforms.Values;
import org.apache.beam.sdk.transforms.WithFailures;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/**
 * How a user unit-tests a pipeline that holds RunInference: {@code TestPipeline} and {@code
 * PAssert}, with the classic DirectRunner (its immutability and encodability checks on) and, for
 * comparison, the same public transform on the embedded portable Flink. Real Python services, real
 * TensorFlow model.
 */
@RunWith(Parameterized.class)
public class DirectRunnerIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(4);

  @Parameters(name = "{0}")
  public static Collection<Object[]> runners() {
    return List.of(new Object[] {"DirectRunner"}, new Object[] {"FlinkRunner"});
  }

  @Rule public final transient TestPipeline p;

  public DirectRunnerIT(String runner) {
    if (runner.equals("DirectRunner")) {
      // Exactly what a user writes: Beam's default test options, the DirectRunner, and xinfer
      // finding the project's .venv on its own.
      this.p = TestPipeline.create();
    } else {
      PipelineOptions options =
          PipelineOptionsFactory.fromArgs("--runner=" + runner, "--parallelism=1").create();
      options.as(XinferOptions.class).setXinferPython(System.getProperty("xinfer.python"));
      this.p = TestPipeline.fromOptions(options);
    }
  }

  @Test
  public void everyPredictionMatchesThePlainPythonModel() {
    PCollection<Row> predictions =
        p.apply(Create.of(Digits.exampleRows(100)).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(RunInference.withModel(Digits.model().toString()).withMaxBatchSize(32));
    assertEquals(RunInference.outputSchema(Digits.EXAMPLE_SCHEMA), predictions.getSchema());
    PAssert.that(predictions).satisfies(Digits.matchesReference(100));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
  }

  /**
   * A JVM whose main runs such a pipeline exits once main returns: the run leaves no live thread
   * that is not a daemon (Beam's Fn API servers had a pool of non-daemon threads that lived a
   * minute after their last task, and kept a DirectRunner JVM alive that long). The embedded Flink
   * stops its own threads as its mini cluster shuts down after the job: they get 10 s.
   */
  @Test
  public void aRunLeavesNoThreadThatKeepsTheJvmAlive() throws InterruptedException {
    java.util.Set<Thread> before = nonDaemonThreads();
    p.apply(Create.of(Digits.exampleRows(20)).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
    long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(10);
    java.util.Set<Thread> left = nonDaemonThreads();
    left.removeAll(before);
    while (!left.isEmpty() && System.nanoTime() < deadline) {
      Thread.sleep(200);
      left.retainAll(nonDaemonThreads());
    }
    assertEquals("threads that would keep the JVM alive: " + left, Collections.emptySet(), left);
  }

  /**
   * On the DirectRunner every pipeline of a JVM shares one SDK worker per Python environment: a
   * second pipeline, with other stages (another batch size, another model id), runs on the worker
   * the first started; before, each pipeline started one (about 2 s) and kept it for the JVM's
   * life. The embedded Flink starts a worker per job and stops it with the job.
   */
  @Test
  public void aSecondPipelineRunsOnTheSdkWorkerOfTheFirst() {
    org.junit.Assume.assumeTrue(
        "the SDK worker is shared across pipelines on the DirectRunner only",
        p.getOptions().getRunner().getSimpleName().equals("DirectRunner"));
    p.apply(Create.of(Digits.exampleRows(20)).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
    java.util.Set<Long> first = sdkWorkers();
    org.apache.beam.sdk.Pipeline second = org.apache.beam.sdk.Pipeline.create(p.getOptions());
    PCollection<Row> predictions =
        second
            .apply(Create.of(Digits.exampleRows(30)).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(
                RunInference.withModel(Model.of(Digits.model().toString()).withId("second"))
                    .withMaxBatchSize(8));
    PAssert.that(predictions)
        .satisfies(Digits.matchesReference(30, Digits.MODEL_NAME, "second", false));
    assertEquals(PipelineResult.State.DONE, second.run().waitUntilFinish());
    assertEquals(1, first.size());
    assertEquals(first, sdkWorkers());
  }

  /**
   * A pipeline that fails with a Python error (a record the model cannot take) leaves the shared
   * SDK worker in service: the worker reported the error itself and is fine; only a lost worker is
   * replaced. Before, every failed bundle retired the worker, and the next test paid about 4 s for
   * a new one.
   */
  @Test
  public void aPythonErrorLeavesTheSdkWorkerInService() {
    org.junit.Assume.assumeTrue(
        "the SDK worker is shared across pipelines on the DirectRunner only",
        p.getOptions().getRunner().getSimpleName().equals("DirectRunner"));
    org.apache.beam.sdk.Pipeline good = org.apache.beam.sdk.Pipeline.create(p.getOptions());
    good.apply(Create.of(Digits.exampleRows(5)).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()));
    assertEquals(PipelineResult.State.DONE, good.run().waitUntilFinish());
    java.util.Set<Long> before = sdkWorkers();

    List<Row> rows = new ArrayList<>(Digits.exampleRows(3));
    rows.add(
        Row.withSchema(Digits.EXAMPLE_SCHEMA)
            .addValues(4444L, 1L, Collections.nCopies(10, 0.5f))
            .build());
    org.apache.beam.sdk.Pipeline failing = org.apache.beam.sdk.Pipeline.create(p.getOptions());
    failing
        .apply(Create.of(rows).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()));
    assertThrows(RuntimeException.class, () -> failing.run().waitUntilFinish());

    PCollection<Row> predictions =
        p.apply(Create.of(Digits.exampleRows(10)).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(RunInference.withModel(Digits.model().toString()));
    PAssert.that(predictions).satisfies(Digits.matchesReference(10));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
    assertEquals(1, before.size());
    assertEquals("the same SDK worker after the Python error", before, sdkWorkers());
  }

  /** The live Python SDK workers under this JVM (started by its worker pool). */
  private static java.util.Set<Long> sdkWorkers() {
    java.util.Set<Long> workers = new java.util.TreeSet<>();
    ProcessHandle.current()
        .descendants()
        .filter(
            process ->
                process.isAlive()
                    && process
                        .info()
                        .arguments()
                        .map(a -> String.join(" ", a).contains("SdkHarness("))
                        .orElse(false))
        .forEach(process -> workers.add(process.pid()));
    return workers;
  }

  private static java.util.Set<Thread> nonDaemonThreads() {
    java.util.Set<Thread> threads = new java.util.HashSet<>();
    for (Thread thread : Thread.getAllStackTraces().keySet()) {
      if (thread.isAlive() && !thread.isDaemon() && thread != Thread.currentThread()) {
        threads.add(thread);
      }
    }
    return threads;
  }

  @Test
  public void aPythonFailureFailsThePipelineWithThePythonMessage() {
    List<Row> rows = new ArrayList<>(Digits.exampleRows(3));
    rows.add(
        Row.withSchema(Digits.EXAMPLE_SCHEMA)
            .addValues(4242L, 1L, Collections.nCopies(10, 0.5f))
            .build());
    p.apply(Create.of(rows).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()));
    RuntimeException e = assertThrows(RuntimeException.class, () -> p.run().waitUntilFinish());
    assertThat(
        e.getMessage(),
        containsString("record {id=4242, label=1}: field 'features' has 10 values"));
  }

  /** The dead-letter and keyed forms: several outputs and KV elements from the Python stage. */
  @Test
  public void keyedInferenceWithADeadLetterOutput() {
    List<KV<String, Row>> keyed = new ArrayList<>();
    for (Row row : Digits.exampleRows(20)) {
      keyed.add(KV.of(row.getInt64("id") % 2 == 0 ? "even" : "odd", row));
    }
    keyed.add(
        KV.of(
            "odd",
            Row.withSchema(Digits.EXAMPLE_SCHEMA)
                .addValues(4343L, 1L, Collections.nCopies(10, 0.5f))
                .build()));
    WithFailures.Result<PCollection<KV<String, Row>>, Row> result =
        p.apply(
                Create.of(keyed)
                    .withCoder(
                        KvCoder.of(StringUtf8Coder.of(), RowCoder.of(Digits.EXAMPLE_SCHEMA))))
            .apply(RunInference.withModel(Digits.model().toString()).keyed().withFailures());
    PAssert.that(result.output().apply(Values.create())).satisfies(Digits.matchesReference(20));
    PAssert.that(result.output().apply(Keys.create()))
        .satisfies(
            keys -> {
              int even = 0;
              for (String key : keys) {
                even += key.equals("even") ? 1 : 0;
              }
              assertEquals(10, even);
              return null;
            });
    PAssert.that(result.failures())
        .satisfies(Failures.exactlyOne(4343L, "odd", "conversion", "RecordError", "has 10 values"));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
  }

  @Test
  public void everyServerOfARunListensOnLoopbackOnly() throws Exception {
    p.apply(Create.of(Digits.exampleRows(200)).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()).withMaxBatchSize(8));
    RunnerMatrixIT.assertServersListenOnLoopbackOnly(p);
  }
}
