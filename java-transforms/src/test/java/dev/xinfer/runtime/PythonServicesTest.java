package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.net.ServerSocket;
import java.time.Duration;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** How the Python services fail for an operator: fast, naming what was tried and the fix. */
@RunWith(JUnit4.class)
public class PythonServicesTest {
  @Test
  public void unreachableExpansionServiceNamesAddressAndCommand() throws Exception {
    int port;
    try (ServerSocket socket = new ServerSocket(0)) {
      port = socket.getLocalPort();
    }
    String address = "127.0.0.1:" + port;
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () -> PythonServices.checkReachable(address, Duration.ofMillis(300)));
    assertThat(e.getMessage(), containsString("No expansion service answers at " + address));
    assertThat(e.getMessage(), containsString("xinfer-expansion-service --port " + port));
  }

  @Test
  public void malformedAddressesAreRejected() {
    assertThat(
        assertThrows(
                IllegalArgumentException.class,
                () -> PythonServices.checkReachable("localhost", Duration.ZERO))
            .getMessage(),
        containsString("is not HOST:PORT"));
    assertThat(
        assertThrows(
                IllegalArgumentException.class,
                () -> PythonServices.checkReachable("localhost:http", Duration.ZERO))
            .getMessage(),
        containsString("no numeric port"));
  }

  @Test
  public void missingInterpreterSaysWhatWasTriedAndHowToFix() {
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () -> PythonServices.start("/nonexistent/python", Duration.ofSeconds(5)));
    assertThat(e.getMessage(), containsString("tried `/nonexistent/python -m xinfer.services"));
    assertThat(e.getMessage(), containsString("--xinferPython"));
  }

  @Test
  public void interpreterWithoutXinferFailsFastWithTheLog() {
    // An executable that exits at once, as a Python without xinfer does.
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () -> PythonServices.start("/bin/false", Duration.ofSeconds(30)));
    assertThat(e.getMessage(), containsString("exited before they were ready"));
    assertThat(e.getMessage(), containsString("pip install ./python-expansion"));
  }

  @Test
  public void configuredInterpreterWins() {
    assertEquals("/opt/py/bin/python", PythonServices.resolvePython("/opt/py/bin/python"));
  }
}
