package dev.xinfer.runtime.python;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

import java.time.Duration;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/**
 * kill -9 of the real Python services while this JVM uses them: they are started again on the same
 * ports (what running jobs' environments point at), and both services answer there.
 */
@RunWith(JUnit4.class)
public class PythonServicesRestartIT {
  @Test(timeout = 180_000)
  public void killedServicesComeBackOnTheSamePorts() throws Exception {
    String python = PythonServices.resolvePython(System.getProperty("xinfer.python"));
    try (PythonServices services = PythonServices.start(python, Duration.ofSeconds(120))) {
      long first = services.pid();
      String expansion = services.expansionServiceAddress();
      String pool = services.workerPoolAddress();
      ProcessHandle.of(first).orElseThrow().destroyForcibly();
      long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
      while ((services.pid() == first || !services.isAlive()) && System.nanoTime() < deadline) {
        Thread.sleep(200);
      }
      assertNotEquals("a new services process", first, services.pid());
      assertTrue(services.isAlive());
      assertEquals(expansion, services.expansionServiceAddress());
      assertEquals(pool, services.workerPoolAddress());
      PythonServices.checkReachable(expansion, Duration.ofSeconds(30));
      PythonServices.checkReachable(pool, Duration.ofSeconds(30));
      long second = services.pid();
      services.close();
      assertTrue(
          "close() ends the restarted process and it stays ended",
          ProcessHandle.of(second).map(p -> !p.isAlive()).orElse(true));
      Thread.sleep(1000);
      assertEquals(second, services.pid());
    }
  }
}
