package dev.xinfer.runtime.python;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import org.apache.beam.sdk.util.ReleaseInfo;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** How the Python services fail for an operator: fast, naming what was tried and the fix. */
@RunWith(JUnit4.class)
public class PythonServicesTest {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

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

  /** A stand-in interpreter that prints a ready line and waits, as xinfer.services does. */
  private Path fakePython(String beamVersion) throws Exception {
    Path script = tmp.newFile("fake-python").toPath();
    Files.writeString(
        script,
        "#!/bin/sh\n"
            + "echo 'XINFER_READY {\"expansion_service\": \"127.0.0.1:1111\", "
            + "\"worker_pool\": \"127.0.0.1:2222\", \"beam_version\": \""
            + beamVersion
            + "\"}'\n"
            + "exec sleep 60\n");
    script.toFile().setExecutable(true);
    return script;
  }

  @Test
  public void readyLineGivesTheAddressesAndCloseStopsTheProcess() throws Exception {
    String beam = ReleaseInfo.getReleaseInfo().getSdkVersion();
    PythonServices services =
        PythonServices.start(fakePython(beam).toString(), Duration.ofSeconds(10));
    assertEquals("127.0.0.1:1111", services.expansionServiceAddress());
    assertEquals("127.0.0.1:2222", services.workerPoolAddress());
    assertTrue(services.isAlive());
    services.close();
    assertFalse(services.isAlive());
  }

  @Test
  public void aPythonWithAnotherBeamVersionFailsFastNamingBoth() throws Exception {
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () -> PythonServices.start(fakePython("2.70.0").toString(), Duration.ofSeconds(10)));
    assertThat(
        e.getMessage(),
        containsString(
            "Version mismatch: the Java pipeline uses Beam "
                + ReleaseInfo.getReleaseInfo().getSdkVersion()));
    assertThat(e.getMessage(), containsString("has apache-beam 2.70.0"));
    assertThat(e.getMessage(), containsString("./xinfer setup"));
  }

  @Test
  public void configuredInterpreterWins() {
    assertEquals("/opt/py/bin/python", PythonServices.resolvePython("/opt/py/bin/python"));
  }

  @Test
  public void allowedModulesAreDottedNames() {
    assertEquals(
        List.of("my_hooks", "pkg.nets"), PythonServices.allowedModules(" my_hooks,pkg.nets"));
    assertThat(
        assertThrows(IllegalArgumentException.class, () -> PythonServices.allowedModules("os,*"))
            .getMessage(),
        containsString("'*' is not a Python module name"));
  }

  @Test
  public void aSecretFileOthersCanReadIsRefused() throws Exception {
    Path file = Files.createTempFile("secret", "");
    try {
      Files.writeString(file, ServiceSecret.generate());
      Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rw-r--r--"));
      assertThat(
          assertThrows(
                  IllegalArgumentException.class, () -> ServiceSecret.read(file.toString(), "--f"))
              .getMessage(),
          containsString("chmod 600"));
      Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rw-------"));
      assertEquals(64, ServiceSecret.read(file.toString(), "--f").length());
    } finally {
      Files.delete(file);
    }
  }
}
