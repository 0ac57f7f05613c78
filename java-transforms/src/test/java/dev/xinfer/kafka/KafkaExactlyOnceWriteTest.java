package dev.xinfer.kafka;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertThrows;

import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.coders.VarLongCoder;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.common.serialization.LongSerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

/** What the writer refuses at construction, and what it says. (The writing: StreamingFaultsIT.) */
@RunWith(JUnit4.class)
public class KafkaExactlyOnceWriteTest {
  private static PCollection<KV<Long, String>> records() {
    return Pipeline.create(PipelineOptionsFactory.create())
        .apply(
            Create.of(KV.of(1L, "a"))
                .withCoder(KvCoder.of(VarLongCoder.of(), StringUtf8Coder.of())));
  }

  private static KafkaExactlyOnceWrite<Long, String> complete() {
    return KafkaExactlyOnceWrite.<Long, String>write()
        .withBootstrapServers("127.0.0.1:9092")
        .withTopic("predictions")
        .withKeySerializer(LongSerializer.class)
        .withValueSerializer(StringSerializer.class)
        .withSinkGroupId("job-predictions");
  }

  @Test
  public void aCompleteWriterExpands() {
    records().apply(complete().withShards(3));
  }

  @Test
  public void withoutASinkGroupIdItSaysWhichMethodToCall() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                records()
                    .apply(
                        KafkaExactlyOnceWrite.<Long, String>write()
                            .withBootstrapServers("127.0.0.1:9092")
                            .withTopic("predictions")
                            .withKeySerializer(LongSerializer.class)
                            .withValueSerializer(StringSerializer.class)));
    assertThat(e.getMessage(), containsString("withSinkGroupId(id)"));
  }

  @Test
  public void theTransactionalIdIsTheSinksOwn() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> complete().withProducerConfig(Map.of("transactional.id", "mine")));
    assertThat(e.getMessage(), containsString("transactional.id is set by the sink"));
  }

  @Test
  public void atLeastOneShard() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> complete().withShards(0));
    assertThat(e.getMessage(), containsString("withShards(0) needs at least 1 shard"));
  }

  @Test
  public void aBlankTopicIsRefused() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> KafkaExactlyOnceWrite.<Long, String>write().withTopic(" "));
    assertThat(e.getMessage(), containsString("withTopic(topic) needs a topic name"));
  }
}
