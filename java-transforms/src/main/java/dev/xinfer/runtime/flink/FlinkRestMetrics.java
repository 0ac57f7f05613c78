package dev.xinfer.runtime.flink;

import dev.xinfer.InferenceMetrics;
import dev.xinfer.kafka.KafkaExactlyOnceWrite;
import java.net.URI;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.beam.runners.core.metrics.MetricsContainerImpl;
import org.apache.beam.runners.core.metrics.MetricsContainerStepMap;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.metrics.DistributionResult;
import org.apache.beam.sdk.metrics.MetricName;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.flink.api.common.JobID;
import org.apache.flink.client.program.rest.RestClusterClient;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.runtime.rest.messages.EmptyRequestBody;
import org.apache.flink.runtime.rest.messages.MessageQueryParameter;
import org.apache.flink.runtime.rest.messages.job.JobDetailsInfo;
import org.apache.flink.runtime.rest.messages.job.metrics.JobVertexMetricsHeaders;
import org.apache.flink.runtime.rest.messages.job.metrics.JobVertexMetricsMessageParameters;
import org.apache.flink.runtime.rest.messages.job.metrics.Metric;
import org.apache.flink.runtime.rest.messages.job.metrics.MetricsFilterParameter;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * xinfer's metrics (RunInference's, namespace {@value InferenceMetrics#NAMESPACE}, and its Kafka
 * write's) of a running Flink job, read through Flink's REST API: the numbers its web UI and metric
 * reporters show.
 *
 * <p>Beam's Flink runner forwards each stage's metrics to Flink's metric system when a bundle ends
 * ({@code FlinkMetricContainerBase}): a counter as a Flink counter named {@code namespace.name}, a
 * distribution as a gauge whose value is a {@link DistributionResult}, both in the group of the
 * stage's operator (string sets are not forwarded). Flink's REST API lists them per subtask as
 * {@code <subtask>.<operator>.<namespace>_<name>}, with each {@code .}, {@code :}, {@code ,} and
 * space of the operator's and metric's names turned into {@code _} (its {@code MetricQueryService}
 * does that), so where a namespace ends is lost: this class reads the metrics of xinfer's own
 * {@link #NAMESPACES}, sums them over the subtasks, and keeps the operator's name as the step. A
 * model id in a {@code predictions_by_model/<id>} name reads with those four characters as {@code
 * _}. Flink's REST server refreshes its copy of the metrics every {@code
 * metrics.fetcher.update-interval} (10 s by default; the embedded Flink's {@value
 * FlinkEngine#EMBEDDED_METRICS_REFRESH_MILLIS} ms).
 */
@Internal
final class FlinkRestMetrics implements AutoCloseable {
  /** Metric ids per request: the ids go in the URL's query. */
  private static final int IDS_PER_REQUEST = 40;

  private final RestClusterClient<String> client;
  private final JobID job;
  private final long timeoutMillis;

  private FlinkRestMetrics(RestClusterClient<String> client, JobID job, long timeoutMillis) {
    this.client = client;
    this.job = job;
    this.timeoutMillis = timeoutMillis;
  }

  /**
   * A reader of {@code job}'s metrics from the REST server at {@code rest}, with the client
   * settings (TLS) of {@code configuration}; each call waits at most {@code timeoutMillis}.
   */
  static FlinkRestMetrics connect(
      Configuration configuration, URI rest, JobID job, long timeoutMillis) {
    Configuration conf = new Configuration(configuration);
    conf.set(RestOptions.ADDRESS, rest.getHost());
    conf.set(RestOptions.PORT, rest.getPort() > 0 ? rest.getPort() : 8081);
    // A job that has ended answers no more: fail at once rather than retry for a minute.
    conf.set(RestOptions.RETRY_MAX_ATTEMPTS, 0);
    conf.set(RestOptions.CONNECTION_TIMEOUT, timeoutMillis);
    try {
      return new FlinkRestMetrics(new RestClusterClient<>(conf, "xinfer"), job, timeoutMillis);
    } catch (Exception e) {
      throw new IllegalStateException(
          "xinfer could not make a client for Flink's REST API at " + rest, e);
    }
  }

  /**
   * The job's xinfer metrics so far, or null once it has ended (Flink's REST server drops an ended
   * job's metrics).
   */
  @Nullable MetricResults read() throws Exception {
    JobDetailsInfo details = client.getJobDetails(job).get(timeoutMillis, TimeUnit.MILLISECONDS);
    if (details.getJobStatus().isGloballyTerminalState()) {
      return null;
    }
    MetricsContainerStepMap steps = new MetricsContainerStepMap();
    for (JobDetailsInfo.JobVertexDetailsInfo vertex : details.getJobVertexInfos()) {
      List<String> ids = new ArrayList<>();
      for (Metric metric : vertexMetrics(vertex, List.of())) {
        ids.add(metric.getId());
      }
      List<String> xinferIds = xinferMetricIds(ids);
      for (int from = 0; from < xinferIds.size(); from += IDS_PER_REQUEST) {
        List<String> chunk =
            xinferIds.subList(from, Math.min(xinferIds.size(), from + IDS_PER_REQUEST));
        for (Metric metric : vertexMetrics(vertex, chunk)) {
          add(steps, metric.getId(), metric.getValue());
        }
      }
    }
    return MetricsContainerStepMap.asAttemptedOnlyMetricResults(steps);
  }

  private Collection<Metric> vertexMetrics(
      JobDetailsInfo.JobVertexDetailsInfo vertex, List<String> get) throws Exception {
    JobVertexMetricsHeaders headers = JobVertexMetricsHeaders.getInstance();
    JobVertexMetricsMessageParameters params = headers.getUnresolvedMessageParameters();
    params.jobPathParameter.resolve(job);
    params.jobVertexIdPathParameter.resolve(vertex.getJobVertexID());
    if (!get.isEmpty()) {
      for (MessageQueryParameter<?> query : params.getQueryParameters()) {
        if (query instanceof MetricsFilterParameter) {
          ((MetricsFilterParameter) query).resolve(get);
        }
      }
    }
    return client
        .sendRequest(headers, params, EmptyRequestBody.getInstance())
        .get(timeoutMillis, TimeUnit.MILLISECONDS)
        .getMetrics();
  }

  /** Adds one subtask's value of a Beam metric to its step. */
  private static void add(MetricsContainerStepMap steps, String id, @Nullable String value) {
    String @Nullable [] split = split(id);
    if (value == null || split == null) {
      return;
    }
    MetricsContainerImpl container = steps.getContainer(split[0]);
    MetricName name = MetricName.named(split[1], split[2]);
    DistributionResult distribution = parseDistribution(value);
    if (distribution != null) {
      if (distribution.getCount() > 0) {
        container
            .getDistribution(name)
            .update(
                distribution.getSum(),
                distribution.getCount(),
                distribution.getMin(),
                distribution.getMax());
      }
      return;
    }
    try {
      container.getCounter(name).inc(Long.parseLong(value.trim()));
    } catch (NumberFormatException e) {
      // Neither a counter nor a distribution: not one of xinfer's.
    }
  }

  /** The ids among a vertex's metric ids that are xinfer's ({@link #split} takes them). */
  static List<String> xinferMetricIds(Collection<String> ids) {
    List<String> xinfer = new ArrayList<>();
    for (String id : ids) {
      if (split(id) != null) {
        xinfer.add(id);
      }
    }
    return xinfer;
  }

  /**
   * xinfer's namespaces, longest first: RunInference's, and that of its exactly-once Kafka write
   * ({@link dev.xinfer.kafka.KafkaExactlyOnceWrite#METRICS_NAMESPACE}), which shows as {@code
   * xinfer_kafka_} in Flink's REST API.
   */
  static final List<String> NAMESPACES =
      List.of(KafkaExactlyOnceWrite.METRICS_NAMESPACE, InferenceMetrics.NAMESPACE);

  /**
   * A metric id ({@code <subtask>.<operator>.<namespace>_<name>}) as {step (the operator's name),
   * namespace, name}, or null when it is none of an operator's metrics in xinfer's {@link
   * #NAMESPACES}.
   */
  static String @Nullable [] split(String id) {
    int first = id.indexOf('.');
    int last = id.lastIndexOf('.');
    if (first <= 0 || last <= first + 1) {
      return null;
    }
    String metric = id.substring(last + 1);
    for (String namespace : NAMESPACES) {
      // Flink's REST API shows a '.' of a metric's name as '_'.
      String prefix = namespace.replace('.', '_') + "_";
      if (metric.startsWith(prefix) && metric.length() > prefix.length()) {
        return new String[] {
          id.substring(first + 1, last), namespace, metric.substring(prefix.length())
        };
      }
    }
    return null;
  }

  private static final Pattern DISTRIBUTION =
      Pattern.compile("DistributionResult\\{(.*)\\}", Pattern.DOTALL);
  private static final Pattern FIELD = Pattern.compile("(\\w+)=(-?\\d+)");

  /**
   * A distribution from its gauge's value in Flink's REST API ({@link DistributionResult}'s {@code
   * toString()}: {@code DistributionResult{sum=10, count=2, min=4, max=6}}), or null when {@code
   * value} is not one.
   */
  static @Nullable DistributionResult parseDistribution(String value) {
    Matcher whole = DISTRIBUTION.matcher(value.trim());
    if (!whole.matches()) {
      return null;
    }
    Map<String, Long> fields = new TreeMap<>();
    Matcher field = FIELD.matcher(whole.group(1));
    while (field.find()) {
      try {
        fields.put(field.group(1), Long.parseLong(field.group(2)));
      } catch (NumberFormatException e) {
        return null;
      }
    }
    if (!fields.keySet().containsAll(List.of("sum", "count", "min", "max"))) {
      return null;
    }
    return DistributionResult.create(
        fields.get("sum"), fields.get("count"), fields.get("min"), fields.get("max"));
  }

  @Override
  public void close() {
    client.close();
  }
}
