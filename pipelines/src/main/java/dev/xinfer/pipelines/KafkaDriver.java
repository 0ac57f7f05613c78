package dev.xinfer.pipelines;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.LongSerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The streaming demo's side of Kafka: creates the topics, produces labelled examples at a fixed
 * rate, and reads the predictions back.
 */
final class KafkaDriver implements AutoCloseable {
  private final String bootstrapServers;
  private final KafkaConsumer<Long, String> consumer;
  private final AtomicLong produced = new AtomicLong();
  private final AtomicLong sendFailures = new AtomicLong();
  private final RecordIds ids;

  /** When each example was handed to the producer ({@code nanoTime}), by its position in ids. */
  private final AtomicLongArray sentNanos;

  /** What {@link #sentAt} gives for an example not sent (yet), or without an id of the run's. */
  static final long NOT_SENT = Long.MIN_VALUE;

  /** A driver for a run whose examples have {@code ids}. */
  KafkaDriver(String bootstrapServers, RecordIds ids) {
    this.bootstrapServers = bootstrapServers;
    this.ids = ids;
    this.sentNanos = new AtomicLongArray(ids.size());
    for (int i = 0; i < ids.size(); i++) {
      sentNanos.set(i, NOT_SENT);
    }
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
    props.put(ConsumerConfig.GROUP_ID_CONFIG, "xinfer-launcher-" + System.nanoTime());
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    // Only what the job committed: an exactly-once job's aborted writes are never seen.
    props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    // The predictions come back in large polls: with Kafka's default of 500 records a poll, this
    // reader (the launcher's main thread, on a machine the job keeps busy) read back at most about
    // 11,500 records/s, while the job wrote them to the topic at 15,000/s and a reader of the same
    // topic in another JVM kept up: the benchmark measured its own reader as the job's capacity.
    props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10_000);
    props.put(CommonClientConfigs.ENABLE_METRICS_PUSH_CONFIG, false);
    this.consumer = new KafkaConsumer<>(props, new LongDeserializer(), new StringDeserializer());
  }

  private Admin admin() {
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 15_000);
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
    return Admin.create(props);
  }

  /** Creates the topics, failing with the command that starts a broker if none answers. */
  void createTopics(int partitions, String... topics) {
    try (Admin admin = admin()) {
      List<NewTopic> newTopics = new ArrayList<>();
      for (String topic : topics) {
        newTopics.add(new NewTopic(topic, partitions, (short) 1));
      }
      for (Map.Entry<String, KafkaFuture<Void>> created :
          admin.createTopics(newTopics).values().entrySet()) {
        try {
          created.getValue().get(20, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
          // A topic that is there already (given with --inputTopic, say) is used as it is.
          if (!(e.getCause() instanceof TopicExistsException)) {
            throw e;
          }
        }
      }
    } catch (TimeoutException | ExecutionException e) {
      throw new IllegalStateException(
          String.format(
              "No Kafka broker answers at %s (creating topics %s: %s). Start one with "
                  + "`./xinfer cluster up kafka`, or pass --bootstrapServers=HOST:PORT.",
              bootstrapServers, String.join(", ", topics), e.getMessage()),
          e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while creating Kafka topics", e);
    }
  }

  /**
   * Deletes the topics; returns what could not be done, or null. A run's own topics hold every
   * example and prediction (~300 MB at 20,000 records/s for 35 s) in an active segment that Kafka's
   * retention never deletes: left, the broker's folder grew by gigabytes over a benchmark.
   */
  @Nullable String deleteTopics(List<String> topics) {
    if (topics.isEmpty()) {
      return null;
    }
    try (Admin admin = admin()) {
      admin.deleteTopics(topics).all().get(20, TimeUnit.SECONDS);
      return null;
    } catch (TimeoutException | ExecutionException e) {
      return e.getMessage();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return "interrupted";
    }
  }

  /**
   * Sends {@code lines} to {@code topic} keyed by their first field on a background thread: at
   * {@code ratePerSecond}, after a ramp of {@code rampSeconds} from a tenth of it (see {@link
   * #dueNanos}).
   */
  Thread produceAtRate(String topic, List<String> lines, int ratePerSecond, int rampSeconds) {
    Thread thread =
        new Thread(
            () -> {
              Properties props = new Properties();
              props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
              // Each example is sent as it is due: no lingering for a fuller batch, which would
              // add to the latency measured.
              props.put(ProducerConfig.LINGER_MS_CONFIG, 0);
              // Nothing reads the client's metrics: none pushed to the broker either (Kafka 3.7
              // checks whether to on every round of its network thread: 1% of the JVM's samples
              // at 10,000 records/s).
              props.put(CommonClientConfigs.ENABLE_METRICS_PUSH_CONFIG, false);
              // The driver's examples are the run's input: they wait out a broker outage (up to
              // 10 min) rather than expire, so that what the summary counts as missing is the
              // job's, not the driver's.
              props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 600_000);
              props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 600_000);
              try (KafkaProducer<Long, String> producer =
                  new KafkaProducer<>(props, new LongSerializer(), new StringSerializer())) {
                long start = System.nanoTime();
                // Each example is due at a fixed time from the start, so a late send (a sleep
                // rounds up to 1 ms on Java 17; the thread may wait for a core) is made up by the
                // next ones going out at once: above 1,000/s examples go out in bursts of those
                // due, at the rate on average. The latency file's sent_ms shows the rate reached.
                for (int i = 0; i < lines.size(); i++) {
                  long due = start + dueNanos(i, ratePerSecond, rampSeconds);
                  long wait = due - System.nanoTime();
                  if (wait > 0) {
                    TimeUnit.NANOSECONDS.sleep(wait);
                  }
                  String line = lines.get(i);
                  // A line without a numeric id (a bad record, for the dead-letter topic) goes
                  // without a key.
                  Long id = RecordIds.idOf(line);
                  int index = id == null ? RecordIds.UNKNOWN : ids.indexOf(id);
                  if (index != RecordIds.UNKNOWN) {
                    sentNanos.set(index, System.nanoTime());
                  }
                  producer.send(
                      new ProducerRecord<>(topic, id, line),
                      (metadata, error) -> {
                        if (error != null && sendFailures.getAndIncrement() == 0) {
                          System.err.println(
                              "xinfer: the launcher could not send an example to "
                                  + topic
                                  + " (the summary counts it missing): "
                                  + error);
                        }
                      });
                  produced.incrementAndGet();
                }
                producer.flush();
              } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
              }
            },
            "xinfer-kafka-producer");
    thread.setDaemon(true);
    thread.start();
    return thread;
  }

  /**
   * When example {@code i} is due, in ns from the first: the rate rises in a straight line from a
   * tenth of {@code ratePerSecond} to all of it over {@code rampSeconds}, then stays. A fresh JVM
   * runs the job's code slowly until the JIT has compiled it (about a minute on 2 cores): at 20,000
   * records/s from the start the job fell 10 s behind in that time, and a job that then keeps up at
   * the rate never drains such a backlog, so the measured records waited behind the warm-up's.
   */
  static long dueNanos(long i, int ratePerSecond, int rampSeconds) {
    double rate = ratePerSecond;
    if (rampSeconds <= 0) {
      return (long) (i * 1e9 / rate);
    }
    double from = rate / 10;
    double ramp = rampSeconds;
    double slope = (rate - from) / ramp; // records/s per s
    double inRamp = (from + rate) / 2 * ramp; // records sent during the ramp
    double seconds;
    if (i < inRamp) {
      // i = from * t + slope * t^2 / 2, for t
      seconds = (-from + Math.sqrt(from * from + 2 * slope * i)) / slope;
    } else {
      seconds = ramp + (i - inRamp) / rate;
    }
    return (long) (seconds * 1e9);
  }

  /**
   * When the example with key {@code id} was handed to the producer ({@code nanoTime}), or {@link
   * #NOT_SENT}.
   */
  long sentAt(long id) {
    int index = ids.indexOf(id);
    return index == RecordIds.UNKNOWN ? NOT_SENT : sentNanos.get(index);
  }

  long produced() {
    return produced.get();
  }

  void subscribe(String... topics) {
    consumer.subscribe(List.of(topics));
  }

  /** Reads what was committed to the subscribed topics within {@code timeout}, duplicates too. */
  List<ConsumerRecord<Long, String>> poll(Duration timeout) {
    List<ConsumerRecord<Long, String>> received = new ArrayList<>();
    consumer.poll(timeout).forEach(received::add);
    return received;
  }

  @Override
  public void close() {
    consumer.close(Duration.ofSeconds(5));
  }
}
