package dev.xinfer.testing;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.Iterator;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/** Checks of RunInference's dead-letter output for {@code PAssert.satisfies}. */
public final class Failures {
  private Failures() {}

  /**
   * Exactly one failure: the input record {@code id}, under {@code key} (null: unkeyed), failed in
   * {@code stage} with {@code errorType}, its message holding {@code words}.
   */
  public static SerializableFunction<Iterable<Row>, Void> exactlyOne(
      long id, @Nullable String key, String stage, String errorType, String words) {
    return failures -> {
      Iterator<Row> it = failures.iterator();
      assertTrue("one failure", it.hasNext());
      Row failure = it.next();
      assertTrue("only one failure", !it.hasNext());
      String message = failure.getString("error_message");
      assertEquals(message, id, (long) failure.getRow("input").getInt64("id"));
      assertEquals(message, key, failure.getString("key"));
      assertEquals(message, stage, failure.getString("stage"));
      assertEquals(message, errorType, failure.getString("error_type"));
      assertTrue(message, message.contains(words));
      return null;
    };
  }
}
