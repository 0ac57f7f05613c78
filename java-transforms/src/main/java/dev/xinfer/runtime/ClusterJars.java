package dev.xinfer.runtime;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.jar.Attributes;
import java.util.jar.JarOutputStream;
import java.util.jar.Manifest;
import java.util.stream.Collectors;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.construction.resources.PipelineResources;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** The jars a cluster's workers load a job's Java stages from. */
@Internal
public final class ClusterJars {
  private static final Logger LOG = LoggerFactory.getLogger(ClusterJars.class);

  private ClusterJars() {}

  /**
   * What a job ships to a cluster: the files the user asked for ({@code --filesToStage}), or else
   * this JVM's classpath, with class directories packed into jars. When the cluster's nodes hold a
   * job runtime ({@code runtime}: jar paths on the nodes, such as xinfer's and Beam's), the jars of
   * the same file names are not shipped; one small jar goes first instead, whose manifest {@code
   * Class-Path} names the runtime's jars, so that the job's own class loader loads them from the
   * node's disk (each job still gets its own copy of Beam's classes and their static state, as with
   * shipped jars). Logs what is shipped, and how much.
   *
   * @param into the folder to write the jars it packs into (the caller removes it when the job has
   *     ended)
   */
  public static List<String> forJob(
      @Nullable List<String> requested, List<String> runtime, PipelineOptions options, Path into) {
    boolean asked = requested != null && !requested.isEmpty();
    List<String> candidates =
        asked
            ? requested
            : PipelineResources.detectClassPathResourcesToStage(
                ClusterJars.class.getClassLoader(), options);
    Set<String> runtimeNames = new LinkedHashSet<>();
    for (String jar : runtime) {
      runtimeNames.add(new File(jar).getName());
    }
    List<String> own = new ArrayList<>();
    int skipped = 0;
    for (String candidate : candidates) {
      File file = new File(candidate);
      if (file.isFile() && runtimeNames.contains(file.getName())) {
        skipped++;
      } else {
        own.add(candidate);
      }
    }
    Path tmp = into;
    List<String> staged = new ArrayList<>();
    if (!runtime.isEmpty()) {
      staged.add(runtimeJar(tmp.resolve(RUNTIME_JAR), runtime).toString());
    }
    staged.addAll(PipelineResources.prepareFilesForStaging(own, tmp.toString()));
    long bytes = staged.stream().mapToLong(jar -> new File(jar).length()).sum();
    String largest =
        staged.stream()
            .map(File::new)
            .sorted(Comparator.comparingLong(File::length).reversed())
            .limit(3)
            .map(f -> String.format(Locale.ROOT, "%s %.1f MB", f.getName(), f.length() / 1e6))
            .collect(Collectors.joining(", "));
    LOG.info(
        "xinfer: the job ships {} jar(s), {} MB (from {}); {} jar(s) of the cluster's job runtime"
            + " load from its nodes instead ({} listed). Largest shipped: {}",
        staged.size(),
        String.format(Locale.ROOT, "%.2f", bytes / 1e6),
        asked ? "--filesToStage" : "this JVM's classpath",
        skipped,
        runtime.size(),
        largest);
    return staged;
  }

  /** The file name of the jar that points a job's class loader at the cluster's job runtime. */
  static final String RUNTIME_JAR = "xinfer-job-runtime.jar";

  /** A jar with nothing but a manifest whose {@code Class-Path} names {@code jars} (file URLs). */
  static Path runtimeJar(Path target, List<String> jars) {
    Manifest manifest = new Manifest();
    Attributes main = manifest.getMainAttributes();
    main.put(Attributes.Name.MANIFEST_VERSION, "1.0");
    main.put(
        Attributes.Name.CLASS_PATH,
        jars.stream()
            .map(jar -> new File(jar).toURI().toString())
            .collect(Collectors.joining(" ")));
    try (JarOutputStream out = new JarOutputStream(Files.newOutputStream(target), manifest)) {
      out.flush();
    } catch (IOException e) {
      throw new UncheckedIOException("xinfer could not write " + target, e);
    }
    return target;
  }

  /**
   * The jars of a cluster's job runtime, from the list a cluster keeps of them: one jar path (as on
   * the cluster's nodes) per line; blank lines and {@code #} comments are skipped.
   *
   * @param source what names the list, for the error message (a configuration key and file)
   */
  public static List<String> runtimeListedIn(Path list, String source) {
    List<String> lines;
    try {
      lines = Files.readAllLines(list, StandardCharsets.UTF_8);
    } catch (IOException | UncheckedIOException e) {
      throw new IllegalStateException(
          String.format(
              "%s names %s, the list of the cluster's job-runtime jars, which cannot be read"
                  + " (%s). `./xinfer cluster up flink` (or spark) writes it; for a cluster of yours, list"
                  + " the jar paths its nodes hold (one per line), or remove the setting to ship"
                  + " every jar with each job.",
              source, list, e.getMessage()),
          e);
    }
    List<String> jars = new ArrayList<>();
    for (String line : lines) {
      String trimmed = line.trim();
      if (!trimmed.isEmpty() && !trimmed.startsWith("#")) {
        jars.add(trimmed);
      }
    }
    return jars;
  }
}
