package dev.xinfer.runtime;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** {@link PrivateTempDirs}: private folders, deleted with their job rather than kept to exit. */
@RunWith(JUnit4.class)
public class PrivateTempDirsTest {
  @Test
  public void aFolderIsPrivateAndGoesWhenDeletedNotAtExitOnly() throws Exception {
    int before = PrivateTempDirs.live();
    Path dir = PrivateTempDirs.create("xinfer-test-");
    Files.writeString(Files.createDirectories(dir.resolve("sub")).resolve("file"), "x");
    assertEquals("rwx------", PosixFilePermissions.toString(Files.getPosixFilePermissions(dir)));
    assertEquals(before + 1, PrivateTempDirs.live());

    PrivateTempDirs.delete(dir);

    assertFalse(Files.exists(dir));
    assertEquals("no longer held for the exit hook", before, PrivateTempDirs.live());
    PrivateTempDirs.delete(dir);
    assertTrue("deleting twice is harmless", before == PrivateTempDirs.live());
  }
}
