"""Rows in blocks: the fast way across the Java/Python boundary.

Java (``dev.xinfer.runtime.python.RowBlocks``) sends one element per batch of rows: the
rows' features as one contiguous little-endian tensor, the rows themselves
(RowCoder-encoded, for the output and for the record-by-record path) and their
timestamps. A block's model input is one ``np.frombuffer``: no per-row work in
Python. The output block carries the scores as one tensor back to Java, which
makes the output Rows.

A block the model cannot take as a tensor (rows whose features differ in length
or are null, a NaN under the reject policy, a batch the model refuses) is
decoded and run record by record through the handler's ``run_inference``, so
each bad record fails alone, with the stage and message it gets without blocks.
"""

import base64
import time
from typing import Any, Dict, List, Optional

import numpy as np
import apache_beam as beam
from apache_beam.coders import RowCoder
from apache_beam.coders.coder_impl import create_InputStream
from apache_beam.metrics import Metrics
from apache_beam.portability.api import schema_pb2
from apache_beam.typehints import row_type
from apache_beam.typehints.schemas import named_tuple_from_schema
from apache_beam.utils import shared

from xinfer import convert
from xinfer import handlers
from xinfer import metrics

# The fields of the blocks, in the order of RowBlocks.IN and RowBlocks.OUT.
IN_FIELDS = (('count', np.int64), ('width', np.int64), ('features', bytes),
             ('rows', bytes), ('timestamps', bytes))
OUT_FIELDS = (('count', np.int64), ('rows', bytes), ('timestamps', bytes),
              ('width', np.int64), ('scores', bytes), ('classes', bytes),
              ('model_id', str), ('skipped', bytes))
OUT_TYPE = row_type.RowTypeConstraint.from_fields(list(OUT_FIELDS))
DTYPES = ('float32', 'float64', 'int32', 'int64')


def input_schema(encoded: str) -> schema_pb2.Schema:
  """The Java rows' schema, sent base64-encoded by RunInference."""
  try:
    return schema_pb2.Schema.FromString(base64.b64decode(encoded))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        'RunInference: input_schema is not a base64 Schema proto; the Java and '
        'Python halves of xinfer are from different versions: re-run '
        './xinfer setup (or reinstall ./python-expansion).') from e


def row_type_of(schema: schema_pb2.Schema):
  return named_tuple_from_schema(schema)


def decode_rows(coder_impl, data: bytes, count: int) -> List[Any]:
  stream = create_InputStream(data)
  return [coder_impl.decode_from_stream(stream, True) for _ in range(count)]


def features_of(block, dtype: str) -> Optional[np.ndarray]:
  """The block's features as a (count, width) array, or None when its rows'
  features differ (Java then sends width -1)."""
  if block.width < 0:
    return None
  x = np.frombuffer(block.features, dtype=np.dtype(dtype).newbyteorder('<'))
  return x.reshape(int(block.count), int(block.width))


class BlockInference(beam.DoFn):
  """Runs the model on each block; predictions as an output block, failures
  (dead letter) as failure Rows on the ``failures`` output."""
  def __init__(self, handler: handlers.RowModelHandler, schema_b64: str,
               feature_dtype: str, inference_args: Optional[Dict[str, Any]],
               dead_letter: bool, failures_tag: str, failure_error):
    if feature_dtype not in DTYPES:
      raise ValueError(f"RunInference: feature_dtype '{feature_dtype}' is not "
                       f"one of {', '.join(DTYPES)}.")
    self._handler = handler
    self._schema_b64 = schema_b64
    self._dtype = feature_dtype
    self._inference_args = inference_args or {}
    self._dead_letter = dead_letter
    self._failures_tag = failures_tag
    self._failure_error = failure_error
    self._shared = shared.Shared()
    self._slot = None
    self._coder = None
    self._load_millis = None
    ns = metrics.NAMESPACE
    self._inferences = Metrics.counter(ns, metrics.NUM_INFERENCES)
    self._predictions = Metrics.counter(ns, metrics.PREDICTIONS)
    self._failures = Metrics.counter(ns, metrics.FAILURES)
    self._batch_size = Metrics.distribution(ns, metrics.BATCH_SIZE)
    self._batch_bytes = Metrics.distribution(ns, metrics.BATCH_BYTE_SIZE)
    self._latency = Metrics.distribution(ns, metrics.BATCH_LATENCY_MICROS)
    self._load_latency = Metrics.distribution(ns,
                                              metrics.LOAD_MODEL_LATENCY_MILLIS)

  def setup(self):
    self._coder = RowCoder(input_schema(self._schema_b64)).get_impl()

    def load():
      started = time.monotonic()
      slot = self._handler.load_model()
      self._load_millis = int((time.monotonic() - started) * 1000)
      return slot

    self._slot = self._shared.acquire(load)

  def process(self, block):
    if self._load_millis is not None:
      # Metrics count inside a bundle only: setup's load is reported here.
      self._load_latency.update(self._load_millis)
      self._load_millis = None
    count = int(block.count)
    started = time.monotonic()
    features = features_of(block, self._dtype)
    done = None
    if features is not None:
      done = self._handler.run_block(features, self._slot, self._inference_args)
    failed = []
    if done is None:
      outputs, model_id, failed = self._record_by_record(block)
    else:
      outputs, model_id = done
    self._inferences.inc(count)
    self._batch_size.update(count)
    self._batch_bytes.update(len(block.features) or len(block.rows))
    self._latency.update(int((time.monotonic() - started) * 1e6))
    self._predictions.inc(count - len(failed))
    for failure in failed:
      self._failures.inc()
      yield beam.pvalue.TaggedOutput(self._failures_tag, failure[1])
    scores = outputs.reshape(count, -1).astype('<f4', copy=False)
    width = scores.shape[1]
    classes = (np.argmax(scores, axis=1)
               if width else np.full(count, -1)).astype('<i8')
    yield beam.Row(count=count,
                   rows=block.rows,
                   timestamps=block.timestamps,
                   width=int(width),
                   scores=scores.tobytes(),
                   classes=classes.tobytes(),
                   model_id=model_id or '',
                   skipped=np.asarray([i for i, _ in failed],
                                      dtype='<i4').tobytes())

  def _record_by_record(self, block):
    """The block's rows through the handler one by one: (scores, model id,
    failures as (index, failure Row))."""
    rows = decode_rows(self._coder, block.rows, int(block.count))
    results = self._handler.run_inference(rows, self._slot,
                                          self._inference_args)
    scored = [
        np.asarray(r.inference, dtype=np.float32).reshape(-1) for r in results
        if not isinstance(r.inference, handlers.Failure)
    ]
    width = scored[0].size if scored else 0
    scores = np.zeros((len(rows), width), dtype=np.float32)
    failed = []
    for i, result in enumerate(results):
      outcome = result.inference
      if isinstance(outcome, handlers.Failure):
        if not self._dead_letter:
          raise self._failure_error(outcome)
        failed.append(
            (i,
             convert.to_failure_row(result.example, outcome.stage,
                                    outcome.error_type, outcome.message,
                                    result.model_id)))
        continue
      values = np.asarray(outcome, dtype=np.float32).reshape(-1)
      if values.size != width:
        raise ValueError(
            f'RunInference: the model returned {values.size} values for one '
            f'record and {width} for another; a model must return outputs of '
            'one shape.')
      scores[i] = values
    model_id = results[0].model_id if results else self._slot.model_id
    return scores, model_id, failed
