package dev.xinfer.runtime;

import java.nio.file.Path;
import java.util.List;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.util.construction.resources.PipelineResources;

/** The jars a cluster's workers load a job's Java stages from. */
@Internal
public final class ClusterJars {
  private ClusterJars() {}

  /** This JVM's classpath, with class directories packed into jars. */
  public static List<String> ofThisJvm(PipelineOptions options) {
    Path tmp = PrivateTempDirs.create("xinfer-job-jars-");
    return PipelineResources.prepareFilesForStaging(
        PipelineResources.detectClassPathResourcesToStage(
            ClusterJars.class.getClassLoader(), options),
        tmp.toString());
  }
}
