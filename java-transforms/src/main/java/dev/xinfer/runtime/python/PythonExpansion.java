package dev.xinfer.runtime.python;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.ExternalTransforms.ExternalConfigurationPayload;
import org.apache.beam.sdk.annotations.Internal;
import org.apache.beam.sdk.coders.CoderException;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.util.construction.DefaultExpansionServiceClientFactory;
import org.apache.beam.sdk.util.construction.ExpansionServiceClientFactory;
import org.apache.beam.sdk.util.construction.External;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.ByteString;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.CallOptions;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Channel;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ClientCall;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ClientInterceptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ManagedChannelBuilder;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Metadata;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.MethodDescriptor;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.MetadataUtils;

/**
 * A Python transform expanded by xinfer's expansion service, with the run's secret on every call.
 *
 * <p>Beam's {@code PythonExternalTransform} calls the expansion service over a plain channel with
 * no way to add headers; this builds the same request (the {@code
 * beam:transforms:python:fully_qualified_named} URN, the constructor's keyword arguments as a Row)
 * and sends it through a channel that carries {@link ServiceSecret#HEADER}.
 */
@Internal
public final class PythonExpansion {
  private static final String URN = "beam:transforms:python:fully_qualified_named";

  /** One client factory (and so one channel) per service address and secret. */
  private static final Map<String, ExpansionServiceClientFactory> CLIENTS =
      new ConcurrentHashMap<>();

  private PythonExpansion() {}

  /**
   * The Python transform {@code fullyQualifiedName} built with {@code kwargs} (strings, booleans,
   * integers, longs, doubles), expanded by the service at {@code address} that checks {@code
   * secret}.
   */
  public static PTransform<PCollection<?>, PCollectionTuple> of(
      String fullyQualifiedName, Map<String, Object> kwargs, String address, String secret) {
    byte[] payload = payload(fullyQualifiedName, kwargs).toByteArray();
    return External.<PCollection<?>, Object>of(URN, payload, address, client(address, secret))
        .withMultiOutputs();
  }

  static ExternalConfigurationPayload payload(
      String fullyQualifiedName, Map<String, Object> kwargs) {
    Schema.Builder kwargsSchema = Schema.builder();
    kwargs.forEach((name, value) -> kwargsSchema.addField(name, typeOf(name, value)));
    Schema.Builder schemaBuilder = Schema.builder().addStringField("constructor");
    if (!kwargs.isEmpty()) {
      schemaBuilder.addRowField("kwargs", kwargsSchema.build());
    }
    Schema schema = schemaBuilder.build();
    Row.Builder row = Row.withSchema(schema).addValue(fullyQualifiedName);
    if (!kwargs.isEmpty()) {
      row.addValue(
          Row.withSchema(kwargsSchema.build()).addValues(new ArrayList<>(kwargs.values())).build());
    }
    try {
      return ExternalConfigurationPayload.newBuilder()
          .setSchema(SchemaTranslation.schemaToProto(schema, true))
          .setPayload(
              ByteString.copyFrom(CoderUtils.encodeToByteArray(RowCoder.of(schema), row.build())))
          .build();
    } catch (CoderException e) {
      throw new IllegalStateException(
          "xinfer could not encode the arguments of " + fullyQualifiedName + ": " + e, e);
    }
  }

  private static FieldType typeOf(String name, Object value) {
    if (value instanceof String) {
      return FieldType.STRING;
    } else if (value instanceof Boolean) {
      return FieldType.BOOLEAN;
    } else if (value instanceof Integer) {
      return FieldType.INT32;
    } else if (value instanceof Long) {
      return FieldType.INT64;
    } else if (value instanceof Double) {
      return FieldType.DOUBLE;
    }
    throw new IllegalArgumentException(
        String.format(
            "xinfer: the Python argument %s is a %s; only strings, booleans, integers, longs and "
                + "doubles cross to the expansion service.",
            name, value == null ? "null" : value.getClass().getName()));
  }

  /**
   * The longest an expansion service call may take: Python builds the transform and loads no model
   * then, so a call that takes longer is a service that hangs; the pipeline's construction fails
   * with {@code DEADLINE_EXCEEDED} rather than waiting for ever.
   */
  public static final Duration CALL_DEADLINE = Duration.ofSeconds(120);

  /** Gives each call on the channel {@code deadline} unless it has one of its own. */
  static ClientInterceptor deadline(Duration deadline) {
    return new ClientInterceptor() {
      @Override
      public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
          MethodDescriptor<ReqT, RespT> method, CallOptions callOptions, Channel next) {
        return next.newCall(
            method,
            callOptions.getDeadline() != null
                ? callOptions
                : callOptions.withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS));
      }
    };
  }

  private static ExpansionServiceClientFactory client(String address, String secret) {
    return CLIENTS.computeIfAbsent(
        address + " " + secret,
        unused -> {
          Metadata headers = new Metadata();
          headers.put(
              Metadata.Key.of(ServiceSecret.HEADER, Metadata.ASCII_STRING_MARSHALLER), secret);
          return DefaultExpansionServiceClientFactory.create(
              endpoint ->
                  ManagedChannelBuilder.forTarget(endpoint.getUrl())
                      .usePlaintext()
                      .intercept(
                          MetadataUtils.newAttachHeadersInterceptor(headers),
                          deadline(CALL_DEADLINE))
                      .build());
        });
  }
}
