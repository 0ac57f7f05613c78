package dev.xinfer.runtime;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Comparator;
import java.util.stream.Stream;
import org.apache.beam.sdk.annotations.Internal;

/** Temporary folders of a run: only this user can read them, and they go when the JVM exits. */
@Internal
public final class PrivateTempDirs {
  private PrivateTempDirs() {}

  /** A new folder (mode 0700) under the temp directory, removed with its contents at exit. */
  public static Path create(String prefix) {
    try {
      Path dir =
          Files.createTempDirectory(
              prefix,
              PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
      Runtime.getRuntime()
          .addShutdownHook(new Thread(() -> deleteRecursively(dir), "xinfer-temp-cleanup"));
      return dir;
    } catch (IOException e) {
      throw new UncheckedIOException("xinfer could not make a temporary folder " + prefix, e);
    }
  }

  public static void deleteRecursively(Path dir) {
    try (Stream<Path> paths = Files.walk(dir)) {
      paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException | UncheckedIOException e) {
      // Gone already, or unreadable: nothing more to do.
    }
  }
}
