package dev.xinfer.runtime;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Comparator;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;
import org.apache.beam.sdk.annotations.Internal;

/**
 * Temporary folders of a run: only this user can read them, and they go with the job that made them
 * ({@link #delete}) or, at the latest, when the JVM exits. A JVM that launches job after job (a
 * service, {@code ./xinfer soak}) keeps no folder of a finished job.
 */
@Internal
public final class PrivateTempDirs {
  /** The folders made and not yet deleted, removed by one shutdown hook. */
  private static final Set<Path> LIVE = ConcurrentHashMap.newKeySet();

  static {
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> LIVE.forEach(PrivateTempDirs::deleteRecursively), "xinfer-temp-cleanup"));
  }

  private PrivateTempDirs() {}

  /** A new folder (mode 0700) under the temp directory, removed with its contents at exit. */
  public static Path create(String prefix) {
    try {
      Path dir =
          Files.createTempDirectory(
              prefix,
              PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
      LIVE.add(dir);
      return dir;
    } catch (IOException e) {
      throw new UncheckedIOException("xinfer could not make a temporary folder " + prefix, e);
    }
  }

  /** Deletes a folder of {@link #create} now, with its contents. */
  public static void delete(Path dir) {
    LIVE.remove(dir);
    deleteRecursively(dir);
  }

  /** How many folders of {@link #create} are not deleted yet. */
  static int live() {
    return LIVE.size();
  }

  public static void deleteRecursively(Path dir) {
    try (Stream<Path> paths = Files.walk(dir)) {
      paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException | UncheckedIOException e) {
      // Gone already, or unreadable: nothing more to do.
    }
  }
}
