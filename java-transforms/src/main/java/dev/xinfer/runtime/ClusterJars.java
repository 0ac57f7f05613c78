package dev.xinfer.runtime;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.construction.resources.PipelineResources;

/** The jars a cluster's workers load a job's Java stages from. */
final class ClusterJars {
  private ClusterJars() {}

  /** This JVM's classpath, with class directories packed into jars. */
  static List<String> ofThisJvm(PipelineOptions options) {
    try {
      // Private to this user (0700), removed with its jars when this JVM exits.
      Path tmp = Files.createTempDirectory("xinfer-job-jars-");
      Runtime.getRuntime()
          .addShutdownHook(new Thread(() -> deleteRecursively(tmp), "xinfer-job-jars-cleanup"));
      return PipelineResources.prepareFilesForStaging(
          PipelineResources.detectClassPathResourcesToStage(
              ClusterJars.class.getClassLoader(), options),
          tmp.toString());
    } catch (IOException e) {
      throw new UncheckedIOException("xinfer could not prepare the jars to ship to the cluster", e);
    }
  }

  static void deleteRecursively(Path dir) {
    try (Stream<Path> paths = Files.walk(dir)) {
      paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException | UncheckedIOException e) {
      // Gone already, or unreadable: nothing more to do at exit.
    }
  }
}
