package dev.xinfer.pipelines;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;

/**
 * An application that tries to run work on a Spark worker: its one task writes a text file (Spark's
 * own code, so the executor needs none of this test's classes). A test runs it against the cluster
 * with and without the cluster's secret.
 *
 * <p>Arguments: MASTER OUTPUT_DIR [SECRET_FILE].
 */
public final class SparkProbe {
  private SparkProbe() {}

  public static void main(String[] args) throws Exception {
    SparkConf conf =
        new SparkConf()
            .setMaster(args[0])
            .setAppName("xinfer-spark-probe")
            .set("spark.driver.bindAddress", "127.0.0.1")
            .set("spark.driver.host", "127.0.0.1")
            .set("spark.ui.enabled", "false")
            // The executors' Java 17 flags, as xinfer's SparkEngine sets them for its jobs.
            .set(
                "spark.executor.extraJavaOptions",
                String.join(" ", Files.readAllLines(Paths.get("runners-config/java17.args"))));
    if (args.length > 2) {
      conf.set("spark.authenticate", "true")
          .set(
              "spark.authenticate.secret",
              Files.readString(Paths.get(args[2]), StandardCharsets.US_ASCII).trim());
    }
    try (JavaSparkContext sc = new JavaSparkContext(conf)) {
      sc.parallelize(List.of("ran on the worker"), 1).saveAsTextFile(args[1]);
    }
  }
}
