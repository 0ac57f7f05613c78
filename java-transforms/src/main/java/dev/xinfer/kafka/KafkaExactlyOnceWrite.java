package dev.xinfer.kafka;

import com.google.auto.value.AutoValue;
import java.io.Serializable;
import java.time.Duration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.coders.VarIntCoder;
import org.apache.beam.sdk.coders.VarLongCoder;
import org.apache.beam.sdk.metrics.Counter;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.state.StateSpec;
import org.apache.beam.sdk.state.StateSpecs;
import org.apache.beam.sdk.state.ValueState;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.display.DisplayData;
import org.apache.beam.sdk.transforms.windowing.GlobalWindows;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PDone;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.Serializer;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes {@code KV<K, V>} records to a Kafka topic exactly once, committing one Kafka transaction
 * per shard for everything a checkpoint made stable (on Flink: everything read since the previous
 * checkpoint), instead of one per record as Beam 2.62's {@code KafkaIO.write().withEOS(...)} does
 * (about 13 records/s here with it, against the full rate of the pipeline with this one).
 *
 * <pre>{@code
 * predictions.apply(
 *     KafkaExactlyOnceWrite.<Long, String>write()
 *         .withBootstrapServers("127.0.0.1:9092")
 *         .withTopic("predictions")
 *         .withKeySerializer(LongSerializer.class)
 *         .withValueSerializer(StringSerializer.class)
 *         .withSinkGroupId("fraud-scoring-predictions"));
 * }</pre>
 *
 * <p>How: records are spread over {@link #withShards shards}; the writer of a shard is a stateful
 * {@code @RequiresStableInput} step, so the runner hands it a record only once the record is part
 * of a completed checkpoint, and replays exactly those records, in the same order, after a restore.
 * The writer numbers its records in that order (the number is kept in its state) and commits, in
 * each transaction, the shard's next number as the sink group's offset ({@code
 * <sinkGroupId>.shard-<n>}, partition 0 of the topic), atomically with the records. After a
 * restore, the records numbered below the committed offset are already in Kafka and are skipped
 * (counted as {@code records_already_written}). A new job (no restored state) starts its own
 * numbering: each job run has an id, kept in the state and in the offset's metadata, so a new run
 * never skips records because an earlier run wrote as many.
 *
 * <p>Needs a runner that supports {@code @RequiresStableInput} with checkpoints: Beam's Flink
 * runner (streaming, {@code --checkpointingInterval} set). Readers see the records once the
 * transaction commits, when they read with {@code isolation.level=read_committed}; a record's
 * output therefore waits for the next completed checkpoint. Each shard has one transactional
 * producer ({@code transactional.id} = the shard's group), so two jobs must not share a sink group
 * id: the newer one fences the older one's writers, which then fail.
 */
@AutoValue
public abstract class KafkaExactlyOnceWrite<K, V> extends PTransform<PCollection<KV<K, V>>, PDone> {

  /** Metric namespace of the writer's counters. */
  public static final String METRICS_NAMESPACE = "xinfer.kafka";

  abstract @Nullable String getBootstrapServers();

  abstract @Nullable String getTopic();

  abstract @Nullable Class<? extends Serializer<K>> getKeySerializer();

  abstract @Nullable Class<? extends Serializer<V>> getValueSerializer();

  abstract @Nullable String getSinkGroupId();

  abstract int getShards();

  abstract Map<String, String> getProducerConfig();

  abstract Builder<K, V> toBuilder();

  @AutoValue.Builder
  abstract static class Builder<K, V> {
    abstract Builder<K, V> setBootstrapServers(String value);

    abstract Builder<K, V> setTopic(String value);

    abstract Builder<K, V> setKeySerializer(Class<? extends Serializer<K>> value);

    abstract Builder<K, V> setValueSerializer(Class<? extends Serializer<V>> value);

    abstract Builder<K, V> setSinkGroupId(String value);

    abstract Builder<K, V> setShards(int value);

    abstract Builder<K, V> setProducerConfig(Map<String, String> value);

    abstract KafkaExactlyOnceWrite<K, V> build();
  }

  /** A writer to configure with the {@code withX} methods; one shard unless {@link #withShards}. */
  public static <K, V> KafkaExactlyOnceWrite<K, V> write() {
    return new AutoValue_KafkaExactlyOnceWrite.Builder<K, V>()
        .setShards(1)
        .setProducerConfig(Map.of())
        .build();
  }

  /** The brokers, {@code host:port[,host:port]}. */
  public KafkaExactlyOnceWrite<K, V> withBootstrapServers(String bootstrapServers) {
    checkArgument(
        bootstrapServers != null && !bootstrapServers.isBlank(),
        "withBootstrapServers(servers) needs host:port of at least one broker");
    return toBuilder().setBootstrapServers(bootstrapServers).build();
  }

  /** The topic to write to; it must exist (partition 0 holds the sink's committed positions). */
  public KafkaExactlyOnceWrite<K, V> withTopic(String topic) {
    checkArgument(topic != null && !topic.isBlank(), "withTopic(topic) needs a topic name");
    return toBuilder().setTopic(topic).build();
  }

  public KafkaExactlyOnceWrite<K, V> withKeySerializer(Class<? extends Serializer<K>> serializer) {
    checkArgument(serializer != null, "withKeySerializer(class) needs a Kafka Serializer class");
    return toBuilder().setKeySerializer(serializer).build();
  }

  public KafkaExactlyOnceWrite<K, V> withValueSerializer(
      Class<? extends Serializer<V>> serializer) {
    checkArgument(serializer != null, "withValueSerializer(class) needs a Kafka Serializer class");
    return toBuilder().setValueSerializer(serializer).build();
  }

  /**
   * The id under which the sink keeps its committed positions and its producers' transactional ids.
   * Keep it across runs of the same job (a run restored from a checkpoint or savepoint goes on from
   * its positions); give each job its own.
   */
  public KafkaExactlyOnceWrite<K, V> withSinkGroupId(String sinkGroupId) {
    checkArgument(
        sinkGroupId != null && !sinkGroupId.isBlank(),
        "withSinkGroupId(id) needs an id that names this job's sink, e.g. \"<job>-<topic>\"");
    return toBuilder().setSinkGroupId(sinkGroupId).build();
  }

  /** How many transactional writers run in parallel (default 1); any topic partition count. */
  public KafkaExactlyOnceWrite<K, V> withShards(int shards) {
    checkArgument(shards >= 1, "withShards(%s) needs at least 1 shard", shards);
    return toBuilder().setShards(shards).build();
  }

  /**
   * Extra producer settings (for example {@code compression.type}); {@code transactional.id} and
   * {@code enable.idempotence} are the sink's own.
   */
  public KafkaExactlyOnceWrite<K, V> withProducerConfig(Map<String, String> config) {
    checkArgument(config != null, "withProducerConfig(config) needs a map (may be empty)");
    for (String owned :
        new String[] {
          ProducerConfig.TRANSACTIONAL_ID_CONFIG, ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG
        }) {
      checkArgument(
          !config.containsKey(owned),
          "withProducerConfig: %s is set by the sink (from withSinkGroupId); remove it",
          owned);
    }
    return toBuilder().setProducerConfig(Map.copyOf(config)).build();
  }

  @Override
  public PDone expand(PCollection<KV<K, V>> input) {
    checkArgument(
        getBootstrapServers() != null,
        "KafkaExactlyOnceWrite needs withBootstrapServers(host:port)");
    checkArgument(getTopic() != null, "KafkaExactlyOnceWrite needs withTopic(topic)");
    checkArgument(
        getKeySerializer() != null && getValueSerializer() != null,
        "KafkaExactlyOnceWrite needs withKeySerializer(...) and withValueSerializer(...)");
    checkArgument(
        getSinkGroupId() != null,
        "KafkaExactlyOnceWrite needs withSinkGroupId(id), an id for this job's sink");
    Coder<KV<K, V>> recordCoder = input.getCoder();
    Spec spec =
        new Spec(
            getBootstrapServers(),
            getTopic(),
            getKeySerializer().getName(),
            getValueSerializer().getName(),
            getSinkGroupId(),
            new HashMap<>(getProducerConfig()),
            // This construction's run id: the run of a job that has no state yet (see ShardWriter).
            UUID.randomUUID().toString());
    input
        .apply("GlobalWindow", Window.<KV<K, V>>into(new GlobalWindows()))
        .apply("Shard", ParDo.of(new Shard<K, V>(getShards())))
        .setCoder(KvCoder.of(VarIntCoder.of(), recordCoder))
        .apply("WriteTransactions", ParDo.of(new TransactionalWriter<K, V>(spec)));
    return PDone.in(input.getPipeline());
  }

  @Override
  public void populateDisplayData(DisplayData.Builder builder) {
    super.populateDisplayData(builder);
    builder
        .addIfNotNull(DisplayData.item("topic", getTopic()))
        .addIfNotNull(DisplayData.item("sinkGroupId", getSinkGroupId()))
        .add(DisplayData.item("shards", getShards()));
  }

  private static void checkArgument(boolean ok, String message, Object... args) {
    if (!ok) {
      throw new IllegalArgumentException(String.format(message, args));
    }
  }

  /** The writer's settings, as the workers get them. */
  static final class Spec implements Serializable {
    private static final long serialVersionUID = 1L;
    final String bootstrapServers;
    final String topic;
    final String keySerializer;
    final String valueSerializer;
    final String sinkGroupId;
    final HashMap<String, String> producerConfig;
    final String constructionRunId;

    Spec(
        String bootstrapServers,
        String topic,
        String keySerializer,
        String valueSerializer,
        String sinkGroupId,
        HashMap<String, String> producerConfig,
        String constructionRunId) {
      this.bootstrapServers = bootstrapServers;
      this.topic = topic;
      this.keySerializer = keySerializer;
      this.valueSerializer = valueSerializer;
      this.sinkGroupId = sinkGroupId;
      this.producerConfig = producerConfig;
      this.constructionRunId = constructionRunId;
    }

    /** A shard's consumer group (its committed position) and its producer's transactional id. */
    String shardGroup(int shard) {
      return sinkGroupId + ".shard-" + shard;
    }
  }

  /** Spreads records round-robin over the shards. */
  static final class Shard<K, V> extends DoFn<KV<K, V>, KV<Integer, KV<K, V>>> {
    private final int shards;
    private transient int next;

    Shard(int shards) {
      this.shards = shards;
    }

    @Setup
    public void setup() {
      next = ThreadLocalRandom.current().nextInt(shards);
    }

    @ProcessElement
    public void process(@Element KV<K, V> record, OutputReceiver<KV<Integer, KV<K, V>>> out) {
      next = (next + 1) % shards;
      out.output(KV.of(next, record));
    }
  }

  /**
   * One shard's records, numbered in the order they are written, one transaction per shard per
   * bundle. Stateful so that the runner partitions its input by shard (one writer per shard).
   */
  static final class TransactionalWriter<K, V> extends DoFn<KV<Integer, KV<K, V>>, Void> {
    private static final Logger LOG = LoggerFactory.getLogger(KafkaExactlyOnceWrite.class);

    private final Spec spec;

    @StateId("run")
    private final StateSpec<ValueState<String>> runSpec = StateSpecs.value(StringUtf8Coder.of());

    @StateId("next")
    private final StateSpec<ValueState<Long>> nextSpec = StateSpecs.value(VarLongCoder.of());

    private final Counter written = Metrics.counter(METRICS_NAMESPACE, "records_written");
    private final Counter skipped = Metrics.counter(METRICS_NAMESPACE, "records_already_written");
    private final Counter transactions = Metrics.counter(METRICS_NAMESPACE, "transactions");

    private transient Map<Integer, ShardWriter> writers;
    private transient Map<Integer, Pending> pending;

    TransactionalWriter(Spec spec) {
      this.spec = spec;
    }

    @Setup
    public void setup() {
      writers = new HashMap<>();
      pending = new LinkedHashMap<>();
    }

    @StartBundle
    public void startBundle() {
      pending.clear();
    }

    @RequiresStableInput
    @ProcessElement
    public void process(
        @Element KV<Integer, KV<K, V>> element,
        @StateId("run") ValueState<String> runState,
        @StateId("next") ValueState<Long> nextState) {
      int shard = element.getKey();
      Pending open = pending.get(shard);
      if (open == null) {
        String run = runState.read();
        if (run == null) {
          run = spec.constructionRunId;
          runState.write(run);
        }
        Long next = nextState.read();
        open = new Pending(writer(shard), run, next == null ? 0L : next);
        pending.put(shard, open);
      }
      long number = open.next++;
      nextState.write(open.next);
      if (open.writer.alreadyWritten(open.run, number)) {
        skipped.inc();
        open.skipped++;
        return;
      }
      open.writer.send(element.getValue());
      open.sent++;
    }

    @FinishBundle
    public void finishBundle() {
      try {
        for (Map.Entry<Integer, Pending> entry : pending.entrySet()) {
          Pending open = entry.getValue();
          if (open.skipped > 0) {
            LOG.info(
                "xinfer: topic '{}' shard {}: {} replayed records were committed before the "
                    + "restore and are not written again",
                spec.topic,
                entry.getKey(),
                open.skipped);
          }
          if (open.sent > 0) {
            open.writer.commit(open.run, open.next);
            written.inc(open.sent);
            transactions.inc();
          }
        }
      } catch (RuntimeException e) {
        // A writer whose transaction failed is in an unknown state: start over from Kafka's.
        pending.keySet().forEach(this::discard);
        throw e;
      } finally {
        pending.clear();
      }
    }

    @Teardown
    public void teardown() {
      if (writers != null) {
        writers.keySet().forEach(shard -> writers.get(shard).close());
        writers.clear();
      }
    }

    private ShardWriter writer(int shard) {
      ShardWriter writer = writers.get(shard);
      if (writer == null) {
        writer = ShardWriter.open(spec, shard);
        writers.put(shard, writer);
      }
      return writer;
    }

    private void discard(int shard) {
      ShardWriter writer = writers.remove(shard);
      if (writer != null) {
        writer.close();
      }
    }

    /** A shard's share of the current bundle. */
    private static final class Pending {
      final ShardWriter writer;
      final String run;
      long next;
      long sent;
      long skipped;

      Pending(ShardWriter writer, String run, long next) {
        this.writer = writer;
        this.run = run;
        this.next = next;
      }
    }
  }

  /**
   * A shard's transactional producer and what Kafka has committed for it: the run and the next
   * record number, read when the producer starts (after it has fenced any earlier producer of the
   * shard, so no transaction of that one is still open).
   */
  static final class ShardWriter {
    private static final Logger LOG = LoggerFactory.getLogger(KafkaExactlyOnceWrite.class);
    private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(5);

    private final Spec spec;
    private final int shard;
    private final KafkaProducer<Object, Object> producer;
    private final TopicPartition positionPartition;
    private @Nullable String committedRun;
    private long committedNext;
    private boolean inTransaction;

    private ShardWriter(
        Spec spec,
        int shard,
        KafkaProducer<Object, Object> producer,
        @Nullable String committedRun,
        long committedNext) {
      this.spec = spec;
      this.shard = shard;
      this.producer = producer;
      this.positionPartition = new TopicPartition(spec.topic, 0);
      this.committedRun = committedRun;
      this.committedNext = committedNext;
    }

    static ShardWriter open(Spec spec, int shard) {
      String group = spec.shardGroup(shard);
      Properties producerProps = new Properties();
      producerProps.putAll(spec.producerConfig);
      producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, spec.bootstrapServers);
      producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, spec.keySerializer);
      producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, spec.valueSerializer);
      producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
      producerProps.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, group);
      KafkaProducer<Object, Object> producer;
      try {
        producer = new KafkaProducer<>(producerProps);
      } catch (KafkaException e) {
        throw new IllegalStateException(
            String.format(
                "xinfer: could not create the transactional Kafka producer for topic '%s' "
                    + "(brokers %s): %s; check withBootstrapServers and withProducerConfig",
                spec.topic, spec.bootstrapServers, e.getMessage()),
            e);
      }
      try {
        producer.initTransactions();
        OffsetAndMetadata committed = committedPosition(spec, group);
        String run = committed == null ? null : committed.metadata();
        long next = committed == null ? 0L : committed.offset();
        LOG.info(
            "xinfer: exactly-once writer for topic '{}' shard {} (transactional.id {}): {}",
            spec.topic,
            shard,
            group,
            committed == null
                ? "nothing committed yet"
                : "run " + run + " committed records below " + next);
        return new ShardWriter(spec, shard, producer, run, next);
      } catch (RuntimeException e) {
        producer.close(CLOSE_TIMEOUT);
        throw new IllegalStateException(
            String.format(
                "xinfer: the exactly-once writer for topic '%s' shard %d could not start its "
                    + "transactions on %s (%s): is the broker up, does the topic exist, and does "
                    + "the broker allow transactions (transaction.state.log.* settings)?",
                spec.topic, shard, spec.bootstrapServers, e),
            e);
      }
    }

    private static @Nullable OffsetAndMetadata committedPosition(Spec spec, String group) {
      Properties props = new Properties();
      props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, spec.bootstrapServers);
      props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
      props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
      // Waits for an offset commit that a transaction still holds (KIP-447).
      props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
      props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
      props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
      TopicPartition partition = new TopicPartition(spec.topic, 0);
      try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
        return consumer
            .committed(java.util.Set.of(partition), Duration.ofSeconds(60))
            .get(partition);
      }
    }

    /** Whether record {@code number} of {@code run} is in Kafka already (a replay). */
    boolean alreadyWritten(String run, long number) {
      if (!run.equals(committedRun)) {
        if (committedRun != null) {
          LOG.info(
              "xinfer: topic '{}' shard {}: the committed position is run {}'s; run {} starts "
                  + "its own numbering",
              spec.topic,
              shard,
              committedRun,
              run);
        }
        committedRun = run;
        committedNext = 0;
      }
      return number < committedNext;
    }

    @SuppressWarnings("unchecked")
    void send(KV<?, ?> record) {
      if (!inTransaction) {
        producer.beginTransaction();
        inTransaction = true;
      }
      // Errors surface at commit, which flushes and fails if a send failed.
      producer.send(new ProducerRecord<>(spec.topic, record.getKey(), record.getValue()));
    }

    /** Commits the open transaction with the shard's position {@code next} of {@code run}. */
    void commit(String run, long next) {
      try {
        producer.sendOffsetsToTransaction(
            Map.of(positionPartition, new OffsetAndMetadata(next, run)),
            new ConsumerGroupMetadata(spec.shardGroup(shard)));
        producer.commitTransaction();
        inTransaction = false;
        committedRun = run;
        committedNext = next;
      } catch (ProducerFencedException e) {
        throw new IllegalStateException(
            String.format(
                "xinfer: another writer took over transactional.id '%s' (topic '%s' shard %d): "
                    + "a restarted task of this job (this attempt then fails and is replaced), or "
                    + "a second job with the same withSinkGroupId, which must not be",
                spec.shardGroup(shard), spec.topic, shard),
            e);
      } catch (KafkaException e) {
        throw new IllegalStateException(
            String.format(
                "xinfer: the Kafka transaction of topic '%s' shard %d failed (%s); the records "
                    + "are not visible to read_committed readers and are written again after "
                    + "the restart",
                spec.topic, shard, e),
            e);
      }
    }

    void close() {
      try {
        producer.close(CLOSE_TIMEOUT);
      } catch (RuntimeException e) {
        LOG.warn("xinfer: closing the producer of topic '{}' shard {}: {}", spec.topic, shard, e);
      }
    }
  }
}
