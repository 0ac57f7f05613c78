package dev.xinfer.pipelines;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.xinfer.runtime.flink.FlinkEngine;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * What Flink's own metric system shows of the xinfer metrics of the Flink jobs this JVM runs, read
 * while they run, on a thread of its own: plain HTTP to the REST API the web UI uses ({@code
 * /jobs/<id>/vertices/<vertex>/subtasks/metrics?get=...&agg=sum}), independent of xinfer's own
 * reader. Keeps, per metric ({@code <operator>.xinfer_<name>}: Flink's REST API shows the {@code .}
 * between Beam's namespace and name as {@code _}), the largest sum seen while a job was RUNNING.
 */
final class FlinkRestWatch implements AutoCloseable {
  private final HttpClient http =
      HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
  private final ObjectMapper json = new ObjectMapper();
  private final Map<String, Double> seen = new TreeMap<>();
  private final Thread watcher;
  private volatile boolean running = true;

  FlinkRestWatch() {
    watcher = new Thread(this::watch, "xinfer-it-flink-rest");
    watcher.setDaemon(true);
    watcher.start();
  }

  private void watch() {
    while (running) {
      for (Map.Entry<String, URI> job : FlinkEngine.runningJobs().entrySet()) {
        try {
          read(job.getValue(), job.getKey());
        } catch (Exception e) {
          // Not up yet, or ended: the next round tells.
        }
      }
      try {
        Thread.sleep(250);
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  private void read(URI rest, String jobId) throws Exception {
    JsonNode job = get(rest, "/jobs/" + jobId);
    if (!"RUNNING".equals(job.path("state").asText())) {
      return;
    }
    for (JsonNode vertex : job.path("vertices")) {
      String base = "/jobs/" + jobId + "/vertices/" + vertex.path("id").asText();
      List<String> ids = new ArrayList<>();
      for (JsonNode metric : get(rest, base + "/subtasks/metrics")) {
        String id = metric.path("id").asText();
        if (id.contains(".xinfer_")) {
          ids.add(id);
        }
      }
      if (ids.isEmpty()) {
        continue;
      }
      String query =
          ids.stream()
              .map(id -> URLEncoder.encode(id, StandardCharsets.UTF_8))
              .collect(Collectors.joining(","));
      JsonNode values = get(rest, base + "/subtasks/metrics?agg=sum&get=" + query);
      // Read again: only numbers seen while the job still ran count.
      if (!"RUNNING".equals(get(rest, "/jobs/" + jobId).path("state").asText())) {
        return;
      }
      synchronized (this) {
        for (JsonNode value : values) {
          if (value.has("sum")) {
            seen.merge(value.path("id").asText(), value.path("sum").asDouble(), Math::max);
          }
        }
      }
    }
  }

  private JsonNode get(URI rest, String path) throws Exception {
    HttpResponse<String> response =
        http.send(
            HttpRequest.newBuilder(rest.resolve(path)).timeout(Duration.ofSeconds(5)).build(),
            HttpResponse.BodyHandlers.ofString());
    if (response.statusCode() != 200) {
      throw new IllegalStateException(path + ": HTTP " + response.statusCode());
    }
    return json.readTree(response.body());
  }

  /**
   * The largest sum over subtasks seen while a job ran, per metric name after {@code xinfer_}
   * (operators summed by the largest each), e.g. {@code num_inferences}.
   */
  synchronized Map<String, Double> seen() {
    Map<String, Double> byName = new TreeMap<>();
    seen.forEach(
        (id, value) -> byName.merge(id.substring(id.indexOf(".xinfer_") + 8), value, Double::sum));
    return byName;
  }

  @Override
  public void close() throws InterruptedException {
    running = false;
    watcher.interrupt();
    watcher.join(5000);
  }
}
