package dev.xinfer.pipelines.bench;

import dev.xinfer.RunInference;
import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Semaphore;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;
import org.joda.time.Instant;

/**
 * Approach 4, the microservice: the pipeline sends batches of rows to a model server over HTTP
 * ({@code python -m xinfer_bench serve}, see {@code
 * python-expansion/bench/src/xinfer_bench/model_server.py}) and turns the replies into the same
 * output Rows as {@link RunInference}: the input fields plus {@code scores}, {@code
 * predicted_class} and {@code model_id}.
 *
 * <p>The DoFn batches the rows of a bundle to {@code batchSize}, posts each full batch with {@link
 * HttpClient#sendAsync} and goes on batching while up to {@code concurrency} requests are in
 * flight; the next batch waits for a free slot. Replies are collected by the HTTP client's threads
 * and output on the DoFn's own thread, as the next elements arrive and at the end of the bundle
 * (which waits for every request of the bundle).
 */
public final class Microservice extends PTransform<PCollection<Row>, PCollection<Row>> {
  /**
   * Requests in flight per DoFn instance. 2, the number of cores here: the server runs each request
   * on one ONNX Runtime thread (as plain Python does), so two requests keep both cores busy while
   * the pipeline encodes the next batch; more only queue at the server (and take CPU from the
   * pipeline's own threads). Measured on this 2-core machine (wide-mlp, batches of 256, 20,000
   * rows, medians of 3 interleaved runs, other jobs running beside): 1 in flight 10,200 rows/s, 2
   * 14,400, 4 13,700. {@code -Dxinfer.bench.concurrency=N} overrides it.
   */
  public static final int DEFAULT_CONCURRENCY = Integer.getInteger("xinfer.bench.concurrency", 2);

  static final String FEATURES_FIELD = "features";
  private static final java.time.Duration REQUEST_TIMEOUT = java.time.Duration.ofMinutes(2);

  private final String url;
  private final String modelId;
  private final int batchSize;
  private final int concurrency;

  /** {@code url}: the server's {@code /predict} endpoint; {@code modelId}: the rows' model_id. */
  public Microservice(String url, String modelId, int batchSize) {
    this(url, modelId, batchSize, DEFAULT_CONCURRENCY);
  }

  public Microservice(String url, String modelId, int batchSize, int concurrency) {
    if (batchSize < 1 || concurrency < 1) {
      throw new IllegalArgumentException(
          "batchSize and concurrency must be at least 1, got " + batchSize + ", " + concurrency);
    }
    this.url = url;
    this.modelId = modelId;
    this.batchSize = batchSize;
    this.concurrency = concurrency;
  }

  @Override
  public PCollection<Row> expand(PCollection<Row> input) {
    Schema schema = input.getSchema();
    if (!schema.hasField(FEATURES_FIELD)) {
      throw new IllegalArgumentException(
          "Microservice needs a '" + FEATURES_FIELD + "' field of floats; the input has " + schema);
    }
    Schema out = RunInference.outputSchema(schema);
    return input
        .apply(ParDo.of(new HttpFn(url, modelId, batchSize, concurrency, out)))
        .setRowSchema(out);
  }

  /** A row waiting for its prediction: the row, its timestamp and window. */
  private static final class Pending {
    final Row row;
    final Instant timestamp;
    final BoundedWindow window;

    Pending(Row row, Instant timestamp, BoundedWindow window) {
      this.row = row;
      this.timestamp = timestamp;
      this.window = window;
    }
  }

  /** A request that came back: its rows with their scores, or what went wrong. */
  private static final class Done {
    final List<Pending> batch;
    final float @Nullable [][] scores;
    final @Nullable RuntimeException error;

    Done(List<Pending> batch, float @Nullable [][] scores, @Nullable RuntimeException error) {
      this.batch = batch;
      this.scores = scores;
      this.error = error;
    }
  }

  /** Something that takes an output Row; returns false if it cannot (another window). */
  private interface Emitter {
    boolean emit(Row row, Instant timestamp, BoundedWindow window);
  }

  static final class HttpFn extends DoFn<Row, Row> {
    private final String url;
    private final String modelId;
    private final int batchSize;
    private final int concurrency;
    private final Schema out;
    private transient @Nullable HttpClient client;
    private transient @Nullable URI uri;
    private transient @Nullable Semaphore slots;
    private transient List<Pending> batch;
    private transient Queue<Done> done;
    private transient List<Done> deferred;

    HttpFn(String url, String modelId, int batchSize, int concurrency, Schema out) {
      this.url = url;
      this.modelId = modelId;
      this.batchSize = batchSize;
      this.concurrency = concurrency;
      this.out = out;
    }

    @Setup
    public void setup() throws InterruptedException {
      uri = URI.create(url);
      client =
          HttpClient.newBuilder()
              .version(HttpClient.Version.HTTP_1_1) // the server speaks HTTP/1.1 keep-alive
              .connectTimeout(java.time.Duration.ofSeconds(10))
              .build();
      slots = new Semaphore(concurrency);
      // Fail at once, with the fix, if nothing listens there.
      HttpRequest health =
          HttpRequest.newBuilder(uri.resolve("/health")).timeout(REQUEST_TIMEOUT).GET().build();
      try {
        HttpResponse<String> response =
            client.send(health, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (response.statusCode() != 200) {
          throw new IllegalStateException(
              "the model server at "
                  + uri.resolve("/health")
                  + " answered "
                  + response.statusCode()
                  + ": "
                  + response.body().strip());
        }
      } catch (IOException e) {
        throw unreachable(e);
      }
    }

    @StartBundle
    public void startBundle() {
      batch = new ArrayList<>(batchSize);
      done = new ConcurrentLinkedQueue<>();
      deferred = new ArrayList<>();
    }

    @ProcessElement
    public void process(
        @Element Row row,
        @Timestamp Instant timestamp,
        BoundedWindow window,
        OutputReceiver<Row> receiver)
        throws InterruptedException {
      batch.add(new Pending(row, timestamp, window));
      if (batch.size() == batchSize) {
        send();
      }
      // The receiver outputs into this element's window: rows of other windows wait for
      // finishBundle.
      drain(
          (r, t, w) -> {
            if (!w.equals(window)) {
              return false;
            }
            receiver.outputWithTimestamp(r, t);
            return true;
          });
    }

    @FinishBundle
    public void finishBundle(FinishBundleContext context) throws InterruptedException {
      if (!batch.isEmpty()) {
        send();
      }
      // Every slot free: every request of this bundle has come back.
      slots.acquire(concurrency);
      slots.release(concurrency);
      drain(
          (r, t, w) -> {
            context.output(r, t, w);
            return true;
          });
    }

    /** Posts the current batch once a slot is free; its reply lands in {@link #done}. */
    private void send() throws InterruptedException {
      List<Pending> rows = batch;
      batch = new ArrayList<>(batchSize);
      ByteBuffer body =
          ByteBuffer.allocate(rows.size() * Bench.FEATURES * Float.BYTES)
              .order(ByteOrder.LITTLE_ENDIAN);
      for (Pending p : rows) {
        Collection<Float> features = p.row.getArray(FEATURES_FIELD);
        if (features == null || features.size() != Bench.FEATURES) {
          throw new IllegalArgumentException(
              "row "
                  + p.row
                  + ": '"
                  + FEATURES_FIELD
                  + "' needs "
                  + Bench.FEATURES
                  + " floats, has "
                  + (features == null ? "none" : features.size()));
        }
        for (Float v : features) {
          body.putFloat(v);
        }
      }
      HttpRequest request =
          HttpRequest.newBuilder(uri)
              .timeout(REQUEST_TIMEOUT)
              .header("Content-Type", "application/octet-stream")
              .header("X-Rows", Integer.toString(rows.size()))
              .POST(HttpRequest.BodyPublishers.ofByteArray(body.array()))
              .build();
      slots.acquire();
      client
          .sendAsync(request, HttpResponse.BodyHandlers.ofByteArray())
          .handle(
              (response, failure) -> {
                Done result;
                try {
                  result =
                      failure == null
                          ? new Done(rows, decode(response, rows.size()), null)
                          : new Done(rows, null, failed(failure));
                } catch (RuntimeException e) {
                  result = new Done(rows, null, e);
                }
                done.add(result);
                slots.release();
                return null;
              });
    }

    /** Outputs every reply that has come back (rethrowing a failed request's error). */
    private void drain(Emitter emitter) {
      if (!deferred.isEmpty()) {
        List<Done> again = deferred;
        deferred = new ArrayList<>();
        for (Done d : again) {
          emit(d, emitter);
        }
      }
      for (Done d = done.poll(); d != null; d = done.poll()) {
        if (d.error != null) {
          throw d.error;
        }
        emit(d, emitter);
      }
    }

    private void emit(Done d, Emitter emitter) {
      List<Pending> left = new ArrayList<>();
      List<float[]> leftScores = new ArrayList<>();
      for (int i = 0; i < d.batch.size(); i++) {
        Pending p = d.batch.get(i);
        float[] scores = d.scores[i];
        List<Float> values = new ArrayList<>(scores.length);
        int best = 0;
        for (int k = 0; k < scores.length; k++) {
          values.add(scores[k]);
          best = scores[k] > scores[best] ? k : best;
        }
        Row row =
            Row.withSchema(out)
                .addValues(p.row.getValues())
                .addValues(values, (long) best, modelId)
                .build();
        if (!emitter.emit(row, p.timestamp, p.window)) {
          left.add(p);
          leftScores.add(scores);
        }
      }
      if (!left.isEmpty()) {
        deferred.add(new Done(left, leftScores.toArray(new float[0][]), null));
      }
    }

    /** The reply's float32 rows, checked against what was sent. */
    private float[][] decode(HttpResponse<byte[]> response, int rows) {
      if (response.statusCode() != 200) {
        throw new IllegalStateException(
            "the model server at "
                + url
                + " answered "
                + response.statusCode()
                + " to a batch of "
                + rows
                + " rows: "
                + new String(response.body(), StandardCharsets.UTF_8).strip());
      }
      int n = Integer.parseInt(response.headers().firstValue("X-Rows").orElse("-1"));
      int k = Integer.parseInt(response.headers().firstValue("X-Columns").orElse("-1"));
      byte[] body = response.body();
      if (n != rows || k < 1 || body.length != n * k * Float.BYTES) {
        throw new IllegalStateException(
            "the model server at "
                + url
                + " sent "
                + body.length
                + " bytes for "
                + n
                + " x "
                + k
                + " floats; "
                + rows
                + " rows were sent");
      }
      ByteBuffer buffer = ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN);
      float[][] scores = new float[n][k];
      for (int i = 0; i < n; i++) {
        for (int j = 0; j < k; j++) {
          scores[i][j] = buffer.getFloat();
        }
      }
      return scores;
    }

    private RuntimeException failed(Throwable failure) {
      Throwable cause = failure instanceof CompletionException ? failure.getCause() : failure;
      if (cause instanceof HttpTimeoutException) {
        return new IllegalStateException(
            "the model server at "
                + url
                + " did not answer within "
                + REQUEST_TIMEOUT.toSeconds()
                + " s (is it overloaded or stopped?)",
            cause);
      }
      if (cause instanceof IOException) {
        return unreachable((IOException) cause);
      }
      return new IllegalStateException("request to the model server at " + url + " failed", cause);
    }

    private IllegalStateException unreachable(IOException e) {
      String what = e instanceof ConnectException ? "is unreachable" : "failed: " + e;
      return new IllegalStateException(
          "the model server at "
              + url
              + " "
              + what
              + ". Start it with `python -m xinfer_bench serve --model FILE.onnx --port PORT`"
              + " (Bench microservice starts one itself) and pass its /predict URL.",
          e);
    }
  }
}
