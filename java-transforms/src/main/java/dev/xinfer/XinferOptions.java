package dev.xinfer;

import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.checkerframework.checker.nullness.qual.Nullable;

/** Options for the Python services xinfer starts and the runner it runs on. */
public interface XinferOptions extends PipelineOptions {

  @Description(
      "Python interpreter with the xinfer-expansion package installed, used to start the "
          + "expansion service and worker pool. Default: $XINFER_PYTHON, else .venv/bin/python "
          + "in the working directory (not its parents), else python3 on PATH.")
  @Nullable String getXinferPython();

  void setXinferPython(@Nullable String value);

  @Description(
      "HOST:PORT of a running Python worker pool (xinfer-worker-pool) that runs the Python "
          + "stages, e.g. the pool beside a cluster's workers. Default: xinfer starts one beside "
          + "its expansion service, on this machine.")
  @Nullable String getXinferWorkerPool();

  void setXinferWorkerPool(@Nullable String value);

  @Description(
      "With --xinferWorkerPool: the file holding the pool's secret (mode 0600), the one the pool "
          + "was started with (xinfer-worker-pool --secret-file F; ./xinfer cluster up writes "
          + ".xinfer/clusters/<flink|spark>/pool.secret). A pool starts workers only for requests "
          + "that carry it.")
  @Nullable String getXinferWorkerPoolSecretFile();

  void setXinferWorkerPoolSecretFile(@Nullable String value);

  @Description(
      "For a Spark standalone cluster that authenticates applications (spark.authenticate, as "
          + "./xinfer cluster up spark starts it): the file holding its secret (mode 0600; "
          + ".xinfer/clusters/spark/auth/secret). The driver (this JVM) presents it to the master "
          + "and executors.")
  @Nullable String getXinferSparkSecretFile();

  void setXinferSparkSecretFile(@Nullable String value);

  @Description(
      "For a Spark standalone cluster whose nodes hold xinfer's job runtime (xinfer, Beam's Spark"
          + " runner, KafkaIO): the file listing those jars, one path (as on the nodes) per line"
          + " (.xinfer/clusters/spark/runtime-jars.txt, written by ./xinfer cluster up spark). The"
          + " job then ships only its own jars (--filesToStage, or else this JVM's classpath"
          + " without the runtime's jars) and loads the runtime from the nodes' disks. Unset, every"
          + " jar of this JVM's classpath ships with each job.")
  @Nullable String getXinferSparkRuntimeJars();

  void setXinferSparkRuntimeJars(@Nullable String value);

  @Description(
      "Python modules (comma-separated, e.g. my_hooks,my_models.nets) that hooks "
          + "(withPreprocess, withPostprocess) and PyTorch model classes (Model.withModelClass) may "
          + "come from, besides xinfer.examples. They run code in every Python worker, so only the "
          + "modules named here are imported. A cluster's pool has its own list "
          + "(XINFER_ALLOWED_MODULES for ./xinfer cluster up).")
  @Nullable String getXinferAllowedModules();

  void setXinferAllowedModules(@Nullable String value);

  @Description(
      "Seconds to wait for the Python services to report ready, and for an SDK worker that a"
          + " worker pool started to connect to the runner, before failing.")
  @Default.Integer(120)
  int getXinferServiceStartTimeoutSeconds();

  void setXinferServiceStartTimeoutSeconds(int value);

  @Description(
      "Seconds a batch may take in Python (hooks and the model call, for one batch of a bundle) "
          + "before xinfer stops the Python worker so that the runner fails the bundle and "
          + "recovers (Flink: restarts from the last checkpoint, within its restart limit) instead "
          + "of waiting for ever; the worker's log and the pool's warning name the stage and the "
          + "limit. 0: no limit. Model loading is not counted.")
  @Default.Integer(DEFAULT_BUNDLE_TIMEOUT_SECONDS)
  int getXinferBundleTimeout();

  void setXinferBundleTimeout(int seconds);

  /** {@link #getXinferBundleTimeout}'s default: far above any batch a healthy model takes. */
  int DEFAULT_BUNDLE_TIMEOUT_SECONDS = 300;

  @Description(
      "Send rows to the Python model in blocks (one element per batch, the features as one "
          + "contiguous tensor) rather than one element per row. Faster by far; false is for "
          + "comparison and debugging.")
  @Default.Boolean(true)
  boolean getXinferRowBlocks();

  void setXinferRowBlocks(boolean value);

  @Description(
      "Set by xinfer: the runner the user asked for (e.g. FlinkRunner), which xinfer runs "
          + "through Beam's portable runner because the classic one cannot run Python "
          + "transforms.")
  @Nullable String getXinferRequestedRunner();

  void setXinferRequestedRunner(@Nullable String value);
}
