package dev.xinfer.runtime.flink;

import dev.xinfer.runtime.BeamHooks;
import java.lang.reflect.Field;
import java.util.Optional;
import org.apache.beam.sdk.annotations.Internal;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps KafkaIO's reader from waiting for records while Flink's source holds the task's checkpoint
 * lock. Beam's {@code UnboundedSourceWrapper} calls the reader's {@code advance()} holding that
 * lock, and KafkaIO's reader ({@code KafkaUnboundedReader}) waits there up to its private {@code
 * recordsDequeuePollTimeout} (1-20 ms, growing while records come) for its consumer thread's next
 * records. Meanwhile the task's mailbox, which hands the stages' outputs on and ends their bundles,
 * waits for the lock: at 1,000 records/s, 2,485 waits and 25 s of an 80 s run (JFR). xinfer's copy
 * of {@code UnboundedSourceWrapper} (the portable runner's Flink source) sets that timeout to zero
 * before each {@code advance()} ({@link #noWait}) and sleeps 1 ms, without the lock, when its
 * readers have no record (Beam's sleeps 50). Beam's other Flink sources keep KafkaIO's wait: they
 * sleep 50 ms whenever a reader has nothing.
 */
@Internal
public final class KafkaReaderWait {
  /** KafkaIO's reader, by name: xinfer's runtime does not depend on KafkaIO. */
  public static final String READER = "org.apache.beam.sdk.io.kafka.KafkaUnboundedReader";

  /** The reader's private field that bounds its wait for records. */
  public static final String TIMEOUT_FIELD = "recordsDequeuePollTimeout";

  private static final Logger LOG = LoggerFactory.getLogger(KafkaReaderWait.class);

  /**
   * The field and its zero (a Joda {@code Duration} of the reader's class loader), per reader
   * class; none for other readers, and none, with a warning, where the field is gone (Beam's wait,
   * as before; {@link #problem} reports it, and {@code BeamHooksTest} fails on it).
   */
  private static final ClassValue<Optional<Object[]>> TIMEOUTS =
      new ClassValue<>() {
        @Override
        protected Optional<Object[]> computeValue(Class<?> type) {
          if (!type.getName().equals(READER)) {
            return Optional.empty();
          }
          try {
            return Optional.of(timeoutOf(type));
          } catch (ReflectiveOperationException | RuntimeException e) {
            LOG.warn(
                "xinfer cannot reach {}.{}, so Flink's source waits for Kafka holding its"
                    + " checkpoint lock, as in Beam; this xinfer version is built for Beam {}",
                READER,
                TIMEOUT_FIELD,
                BeamHooks.BEAM_VERSION,
                e);
            return Optional.empty();
          }
        }
      };

  private static Object[] timeoutOf(Class<?> reader) throws ReflectiveOperationException {
    Field field = reader.getDeclaredField(TIMEOUT_FIELD);
    field.setAccessible(true);
    return new Object[] {field, field.getType().getField("ZERO").get(null)};
  }

  private KafkaReaderWait() {}

  /** Before {@code reader.advance()}: a KafkaIO reader will not wait for records; others as is. */
  public static void noWait(Object reader) {
    Optional<Object[]> timeout = TIMEOUTS.get(reader.getClass());
    if (timeout.isPresent()) {
      try {
        ((Field) timeout.get()[0]).set(reader, timeout.get()[1]);
      } catch (IllegalAccessException e) {
        throw new IllegalStateException(e);
      }
    }
  }

  /** What no longer matches in the KafkaIO on the classpath, or null (none there is fine). */
  public static @Nullable String problem(ClassLoader loader) {
    try {
      timeoutOf(Class.forName(READER, false, loader));
      return null;
    } catch (ClassNotFoundException e) {
      return null;
    } catch (ReflectiveOperationException | RuntimeException e) {
      return READER
          + "."
          + TIMEOUT_FIELD
          + " (a Joda Duration with a ZERO) is gone ("
          + e
          + "): Flink's source waits for Kafka under its checkpoint lock (KafkaReaderWait)";
    }
  }
}
