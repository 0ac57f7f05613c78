package dev.xinfer.runtime.spark;

import dev.xinfer.runtime.LoopbackFnServers;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.RunnerApi.Environment;
import org.apache.beam.runners.fnexecution.provisioning.JobInfo;
import org.apache.beam.sdk.util.construction.BeamUrns;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a Spark streaming job needs to go on from its checkpoint after its driver died.
 *
 * <p>Given a {@code --checkpointDir} of its own, a job's second run restores the first run's
 * streams from it ({@code JavaStreamingContext.getOrCreate}): the Kafka readers' positions and the
 * micro-batches that were not done, with the stage functions as the first run built them. Those
 * name the first run's job id, the key of its loopback Fn API servers, and, on the embedded Spark,
 * the first run's own Python worker pool (its port and secret), which died with it. So the first
 * run leaves its job id and environments in the folder ({@code xinfer-job}, owner-only, as the
 * pool's secret is in them, and in Spark's checkpoint files too), and a restored run serves the old
 * job id with loopback servers and the old pool's environments with this JVM's pool.
 *
 * <p>A cluster's executors run every job under one id, with the cluster's own pool: nothing to map
 * there, as long as the pool keeps its address and secret.
 */
final class SparkRecovery {
  private static final Logger LOG = LoggerFactory.getLogger(SparkRecovery.class);

  /** The files in the checkpoint folder: the run's job id, and its environments. */
  static final String JOB_ID = "xinfer-job-id";

  static final String ENVIRONMENTS = "xinfer-environments.pb";

  private final Path folder;
  private final boolean embedded;
  private @Nullable String priorJobId;

  SparkRecovery(Path folder, boolean embedded) {
    this.folder = folder;
    this.embedded = embedded;
  }

  /**
   * Before Spark looks at the folder: when a run before this one left its state there, its job id
   * and its environments are served by this JVM (as {@code current}, this run's, by environment
   * id).
   */
  void prepare(Map<String, Environment> current) {
    Path idFile = folder.resolve(JOB_ID);
    if (!Files.exists(idFile)) {
      return;
    }
    RunnerApi.Components prior;
    try {
      priorJobId = new String(Files.readAllBytes(idFile), StandardCharsets.UTF_8).trim();
      prior = RunnerApi.Components.parseFrom(Files.readAllBytes(folder.resolve(ENVIRONMENTS)));
    } catch (IOException e) {
      throw new UncheckedIOException(
          "cannot read the job state a run before this one left with its Spark checkpoint in "
              + folder
              + "; give --checkpointDir a new folder to start the job afresh",
          e);
    }
    if (!embedded || priorJobId == null) {
      return;
    }
    LoopbackFnServers.Runner.SPARK.register(priorJobId);
    LoopbackFnServers.replaceEnvironments(replacements(prior.getEnvironmentsMap(), current));
  }

  /**
   * This run's environment for each of the prior run's worker-pool (EXTERNAL) environments: the one
   * of the same id, else this run's only worker-pool environment (an expansion service names its
   * environments by a counter, so a run in a JVM that expanded other pipelines first has other
   * ids).
   */
  static Map<Environment, Environment> replacements(
      Map<String, Environment> prior, Map<String, Environment> current) {
    String external = BeamUrns.getUrn(RunnerApi.StandardEnvironments.Environments.EXTERNAL);
    List<Environment> pools =
        current.values().stream()
            .filter(e -> external.equals(e.getUrn()))
            .collect(Collectors.toList());
    Map<Environment, Environment> replaced = new HashMap<>();
    prior.forEach(
        (id, environment) -> {
          if (!external.equals(environment.getUrn())) {
            return;
          }
          Environment now = current.get(id);
          if (now == null || !external.equals(now.getUrn())) {
            now = pools.size() == 1 ? pools.get(0) : null;
          }
          if (now != null && !now.equals(environment)) {
            replaced.put(environment, now);
          }
        });
    return replaced;
  }

  /**
   * Once Spark made the streaming context: {@code created} (no checkpoint in the folder), this run
   * leaves its own state for the next, unless its graph has {@code queues} queue streams, which
   * Spark cannot restore; else the job goes on from the checkpoint.
   */
  void started(
      boolean created, JobInfo jobInfo, Map<String, Environment> environments, long queues) {
    if (created) {
      if (queues > 0) {
        LOG.warn(
            "xinfer: Spark job {} cannot go on from its checkpoint after a crash: it has {} "
                + "Impulse (a Create, or a periodic impulse) outside its reads, which Beam's Spark "
                + "runner makes a queue stream that Spark cannot restore. A run after a crash "
                + "needs a new --checkpointDir and starts afresh.",
            jobInfo.jobName(),
            queues);
        return;
      }
      write(jobInfo.jobId(), environments);
      LOG.info(
          "xinfer: Spark job {} checkpoints to {}; after a crash of this JVM, run the same "
              + "pipeline with the same --checkpointDir to go on from there",
          jobInfo.jobName(),
          folder);
      return;
    }
    if (priorJobId == null) {
      throw new IllegalStateException(
          "--checkpointDir="
              + folder
              + " holds a Spark checkpoint without the job state xinfer leaves beside it ("
              + JOB_ID
              + "): it was not written by an xinfer job, or by an older version. Give "
              + "--checkpointDir a new folder to start the job afresh.");
    }
    LOG.info(
        "xinfer: Spark job {} restored from its checkpoint in {} (left by run {}): it goes on "
            + "from the Kafka positions and micro-batches there",
        jobInfo.jobName(),
        folder,
        priorJobId);
  }

  /** Once the job has ended. */
  void release() {
    if (embedded && priorJobId != null) {
      LoopbackFnServers.Runner.SPARK.unregister(priorJobId);
    }
  }

  private void write(String jobId, Map<String, Environment> environments) {
    try {
      Files.createDirectories(folder);
      // The environments first: a job id names a complete state.
      writeOwnerOnly(
          ENVIRONMENTS,
          RunnerApi.Components.newBuilder().putAllEnvironments(environments).build().toByteArray());
      writeOwnerOnly(JOB_ID, jobId.getBytes(StandardCharsets.UTF_8));
    } catch (IOException e) {
      throw new UncheckedIOException(
          "cannot write the job state to " + folder + " (--checkpointDir): " + e.getMessage(), e);
    }
  }

  private void writeOwnerOnly(String name, byte[] bytes) throws IOException {
    Path temp =
        Files.createTempFile(
            folder,
            name,
            ".tmp",
            PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
    Files.write(temp, bytes);
    Files.move(temp, folder.resolve(name), StandardCopyOption.REPLACE_EXISTING);
  }
}
