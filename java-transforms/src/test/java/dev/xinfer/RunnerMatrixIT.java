package dev.xinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.xinfer.testing.Digits;
import dev.xinfer.testing.ListeningSockets;
import dev.xinfer.testing.SocketWatch;
import dev.xinfer.testing.Stalls;
import dev.xinfer.testing.TestRunners;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.testing.PAssert;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TestRule;
import org.junit.runner.RunWith;
import org.junit.runners.Parameterized;
import org.junit.runners.Parameterized.Parameters;

/**
 * The same RunInference on each embedded engine, with the real Python services and TensorFlow
 * model: every prediction is checked, and every server of the run listens on loopback only.
 */
@RunWith(Parameterized.class)
public class RunnerMatrixIT {
  @Rule public final TestRule stallGuard = Stalls.failAfterMinutes(4);

  @Parameters(name = "{0}")
  public static Collection<Object[]> runners() {
    List<Object[]> params = new ArrayList<>();
    for (String[] runner : TestRunners.EMBEDDED) {
      params.add(new Object[] {runner[0], Arrays.copyOfRange(runner, 1, runner.length)});
    }
    return params;
  }

  private final String runner;
  private final String[] flags;

  public RunnerMatrixIT(String runner, String[] flags) {
    this.runner = runner;
    this.flags = flags;
  }

  @Test
  public void everyPredictionMatchesTheModelRunInPlainPython() {
    Pipeline p = TestRunners.pipeline(runner, flags);
    PCollection<Row> out =
        p.apply(Create.of(Digits.exampleRows(300)).withRowSchema(Digits.EXAMPLE_SCHEMA))
            .apply(RunInference.withModel(Digits.model().toString()).withMaxBatchSize(64));
    assertEquals(RunInference.outputSchema(Digits.EXAMPLE_SCHEMA), out.getSchema());
    PAssert.that(out).satisfies(Digits.matchesReference(300));
    assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish());
  }

  @Test
  public void everyServerOfARunListensOnLoopbackOnly() throws Exception {
    Pipeline p = TestRunners.pipeline(runner, flags);
    p.apply(Create.of(Digits.exampleRows(500)).withRowSchema(Digits.EXAMPLE_SCHEMA))
        .apply(RunInference.withModel(Digits.model().toString()).withMaxBatchSize(8));
    assertServersListenOnLoopbackOnly(p);
  }

  /**
   * Runs {@code p} while sampling the listening sockets of this JVM and its children (the Python
   * services and the SDK workers), and checks that every one is on loopback and that each kind of
   * server was seen: the Python services' two, and the job's own servers that open in this JVM
   * during the run (the Fn API servers of the Python stage among them).
   */
  static void assertServersListenOnLoopbackOnly(Pipeline p) throws Exception {
    long jvm = ProcessHandle.current().pid();
    Set<String> before = ListeningSockets.byProcess(List.of(jvm)).get(jvm);
    SocketWatch watch =
        SocketWatch.during(
            () -> List.of(jvm),
            () -> assertEquals(PipelineResult.State.DONE, p.run().waitUntilFinish()));
    assertEquals("listening beyond loopback: " + watch.seen(), Set.of(), watch.exposed());
    Set<String> opened = new HashSet<>(watch.seen().get(jvm));
    // On the DirectRunner every pipeline of the JVM shares one SDK worker and its Fn API servers,
    // which an earlier pipeline may have opened: there, the servers listening during the run.
    if (!p.getOptions().getRunner().getSimpleName().equals("DirectRunner")) {
      opened.removeAll(before);
    }
    assertTrue("servers of the run in this JVM: " + watch.seen(), opened.size() >= 3);
    assertTrue(
        "the Python services' expansion service and worker pool: " + watch.seen(),
        watch.seen().entrySet().stream()
            .anyMatch(e -> e.getKey() != jvm && e.getValue().size() >= 2));
  }
}
