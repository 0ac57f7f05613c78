package dev.xinfer.pipelines;

import java.util.Arrays;
import java.util.List;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The ids of a streaming run's examples, each with a position among them, so that the launcher's
 * bookkeeping per record (when it was sent, whether its prediction or dead letter came back) lives
 * in arrays indexed by position. The launcher shares its JVM with the job it measures: maps of
 * boxed ids and their values put a few hundred bytes per record on the heap for the whole run,
 * which every young collection copied again (at 1,000 records/s ~16 MB of survivors and 20-40 ms
 * pauses on 2 cores; 8-15 ms without them).
 */
final class RecordIds {
  /** What {@link #indexOf} gives for an id that no example has. */
  static final int UNKNOWN = -1;

  private final long[] sorted;

  private RecordIds(long[] sorted) {
    this.sorted = sorted;
  }

  /** The ids of {@code lines} (CSV, id first); a line without a numeric id has none. */
  static RecordIds of(List<String> lines) {
    long[] ids = new long[lines.size()];
    int n = 0;
    for (String line : lines) {
      Long id = idOf(line);
      if (id != null) {
        ids[n++] = id;
      }
    }
    long[] sorted = Arrays.copyOf(ids, n);
    Arrays.sort(sorted);
    int distinct = 0;
    for (int i = 0; i < sorted.length; i++) {
      if (i == 0 || sorted[i] != sorted[distinct - 1]) {
        sorted[distinct++] = sorted[i];
      }
    }
    return new RecordIds(Arrays.copyOf(sorted, distinct));
  }

  /** The id of a CSV line (its first field), or null when it is not a number. */
  static @Nullable Long idOf(String line) {
    int comma = line.indexOf(',');
    try {
      return Long.parseLong(comma < 0 ? line : line.substring(0, comma));
    } catch (NumberFormatException e) {
      return null;
    }
  }

  /** The position of {@code id} among the distinct ids, or {@link #UNKNOWN}. */
  int indexOf(long id) {
    int i = Arrays.binarySearch(sorted, id);
    return i < 0 ? UNKNOWN : i;
  }

  /** How many distinct ids there are. */
  int size() {
    return sorted.length;
  }
}
