package dev.xinfer.runtime;

import static org.junit.Assert.assertEquals;

import java.util.List;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** Fails, naming the hook, when the Beam on the classpath lacks what {@link BeamHooks} reaches. */
@RunWith(JUnit4.class)
public class BeamHooksTest {
  @Test
  public void everyBeamHookFindsItsTarget() {
    assertEquals(
        "Beam internals xinfer relies on changed; follow CONTRIBUTING.md \"Upgrading Beam\"",
        List.of(),
        BeamHooks.problems());
  }

  @Test
  public void theStageContextMapsAreReachedForFlinkAndSpark() {
    for (LoopbackFnServers.Runner runner : LoopbackFnServers.Runner.values()) {
      BeamHooks.jobFactories(runner.factory(BeamHooks.class.getClassLoader()))
          .remove("xinfer-beam-hooks-test");
    }
  }
}
