package dev.xinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.Test;

/**
 * The metric names {@link InferenceMetrics} reads are the ones the installed Python side reports:
 * {@code python -m xinfer.metrics} prints Python's list (the one {@code xinfer.blocks} and the
 * handlers report under), and a name on one side only would read as 0 on the other.
 */
public class MetricNamesIT {
  @Test
  public void everyNameJavaReadsIsOneThePythonSideReports() throws Exception {
    JsonNode names = pythonMetricNames();
    assertEquals(InferenceMetrics.NAMESPACE, names.get("namespace").asText());
    Set<String> counters = strings(names.get("counters"));
    Set<String> distributions = strings(names.get("distributions"));
    for (String name : InferenceMetrics.COUNTERS_READ) {
      assertTrue(name + " is not among Python's counters " + counters, counters.contains(name));
    }
    for (String name : InferenceMetrics.DISTRIBUTIONS_READ) {
      assertTrue(
          name + " is not among Python's distributions " + distributions,
          distributions.contains(name));
    }
    // predictionsByModel() reads every predictions_by_model/<id> counter.
    assertTrue(
        "Python names no counter prefix " + InferenceMetrics.PREDICTIONS_BY_MODEL_PREFIX,
        strings(names.get("counter_prefixes"))
            .contains(InferenceMetrics.PREDICTIONS_BY_MODEL_PREFIX));
    // failuresByStage() reads every failed_<stage> counter.
    assertTrue(
        "Python reports no " + InferenceMetrics.FAILED_PREFIX + "<stage> counters: " + counters,
        counters.stream()
            .anyMatch(
                c ->
                    c.startsWith(InferenceMetrics.FAILED_PREFIX)
                        && !c.equals(InferenceMetrics.FAILED_BATCHES)));
  }

  private static JsonNode pythonMetricNames() throws IOException, InterruptedException {
    Process process =
        new ProcessBuilder(System.getProperty("xinfer.python"), "-m", "xinfer.metrics")
            .redirectErrorStream(true)
            .start();
    String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue("python -m xinfer.metrics did not end", process.waitFor(60, TimeUnit.SECONDS));
    assertEquals("python -m xinfer.metrics failed: " + out, 0, process.exitValue());
    return new ObjectMapper().readTree(out);
  }

  private static Set<String> strings(JsonNode array) {
    Set<String> values = new HashSet<>();
    array.forEach(v -> values.add(v.asText()));
    return values;
  }
}
