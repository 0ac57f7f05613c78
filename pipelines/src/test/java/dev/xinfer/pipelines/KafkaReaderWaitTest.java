package dev.xinfer.pipelines;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import dev.xinfer.runtime.BeamHooks;
import dev.xinfer.runtime.flink.KafkaReaderWait;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.List;
import org.apache.beam.sdk.io.UnboundedSource;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.joda.time.Duration;
import org.junit.Test;

/**
 * {@link KafkaReaderWait} on Beam's real KafkaIO reader (created, not started: no broker needed):
 * KafkaIO is on this module's classpath, not on the runtime's.
 */
public class KafkaReaderWaitTest {
  @Test
  public void kafkaIosReaderNoLongerWaitsForRecordsInAdvance() throws Exception {
    PipelineOptions options = PipelineOptionsFactory.create();
    KafkaIO.Read<byte[], byte[]> read =
        KafkaIO.<byte[], byte[]>read()
            .withBootstrapServers("127.0.0.1:9")
            .withTopicPartitions(List.of(new TopicPartition("examples", 0)))
            .withKeyDeserializer(ByteArrayDeserializer.class)
            .withValueDeserializer(ByteArrayDeserializer.class);
    Method makeSource = KafkaIO.Read.class.getDeclaredMethod("makeSource");
    makeSource.setAccessible(true);
    UnboundedSource<?, ?> source = (UnboundedSource<?, ?>) makeSource.invoke(read);
    UnboundedSource.UnboundedReader<?> reader =
        source.split(1, options).get(0).createReader(options, null);
    assertEquals(KafkaReaderWait.READER, reader.getClass().getName());
    Field timeout = reader.getClass().getDeclaredField(KafkaReaderWait.TIMEOUT_FIELD);
    timeout.setAccessible(true);
    assertEquals("KafkaIO's own start", Duration.millis(10), timeout.get(reader));

    KafkaReaderWait.noWait(reader);
    assertEquals(Duration.ZERO, timeout.get(reader));
    reader.close();
  }

  @Test
  public void theHookStillFitsTheKafkaIoOnTheClasspath() {
    assertNull(KafkaReaderWait.problem(KafkaReaderWaitTest.class.getClassLoader()));
    assertTrue(BeamHooks.problems().toString(), BeamHooks.problems().isEmpty());
  }
}
