"""Rows in blocks: the fast way across the Java/Python boundary.

Java (``dev.xinfer.runtime.python.RowBlocks``) sends one element per batch of
rows: the rows themselves (RowCoder-encoded, for the output and for the
record-by-record path), their timestamps, and each model input's field as one
contiguous little-endian tensor, with the per-record shape the rows share. A
block with tensors carries the rows without their tensor fields (the rest of
each row, :func:`rest_schema`): the tensors cross once, and come back beside
the output for Java to make the output Rows of; :func:`whole_rows` makes the
rows again for the record-by-record path.
Which fields those are, and their types, is fixed when the pipeline is built
(:class:`Layout`): the feature field, or the field of each named input, each a
number or boolean, a scalar or (nested) arrays of them. A block's model
inputs are one ``np.frombuffer`` each: no per-row work in Python. The output
block carries each output as one tensor back to Java, which makes the output
Rows: the declared outputs (numbers or booleans, scalars or arrays), or the
scores and predicted classes.

A block the model cannot take as tensors (Java sends no tensors when the rows'
values are null or differ in shape; here: a size or shape the model does not
take, a NaN under the reject policy, a batch the model refuses, an output that
does not fit its declared type) is decoded and run record by record through
the handler's ``run_inference``, so each bad record fails alone, with the
stage and message it gets without blocks.

Strings and bytes do not cross in blocks: a model input or declared output of
those types keeps rows one by one (see ``RowBlocks``).
"""

import base64
import time
import uuid
import typing
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import apache_beam as beam
from apache_beam.coders import RowCoder
from apache_beam.coders.coder_impl import create_InputStream
from apache_beam.metrics import Metrics
from apache_beam.portability.api import schema_pb2
from apache_beam.typehints import row_type
from apache_beam.typehints import schemas
from apache_beam.typehints.schemas import named_tuple_from_schema
from apache_beam.utils import shared

from xinfer import convert
from xinfer import handlers
from xinfer import metrics

_SHAPES = typing.Sequence[typing.Sequence[np.int64]]
_TENSORS = typing.Sequence[bytes]

# The fields of the blocks, in the order of RowBlocks.IN and RowBlocks.OUT.
# ``shapes`` and ``tensors`` hold one entry per tensor of the Layout, in order:
# its values row after row, little-endian, and the shape of one row's value.
IN_FIELDS = (('count', np.int64), ('rows', bytes), ('timestamps', bytes),
             ('shapes', _SHAPES), ('tensors', _TENSORS))
# ``input_shapes`` and ``input_tensors``: the input block's, returned as they
# came (Java makes the output Rows' tensor fields from them).
OUT_FIELDS = (('count', np.int64), ('rows', bytes), ('timestamps', bytes),
              ('model_id', str), ('skipped', bytes), ('shapes', _SHAPES),
              ('tensors', _TENSORS), ('input_shapes',
                                      _SHAPES), ('input_tensors', _TENSORS))
IN_TYPE = row_type.RowTypeConstraint.from_fields(list(IN_FIELDS))
OUT_TYPE = row_type.RowTypeConstraint.from_fields(list(OUT_FIELDS))

_MISMATCH = (
    'The Java and Python halves of xinfer are from different '
    'versions: re-run ./xinfer setup (or reinstall ./python-expansion).')


def input_schema(encoded: str) -> schema_pb2.Schema:
  """The Java rows' schema, sent base64-encoded by RunInference."""
  try:
    return schema_pb2.Schema.FromString(base64.b64decode(encoded))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError('RunInference: input_schema is not a base64 Schema proto. '
                     f'{_MISMATCH}') from e


def row_type_of(schema: schema_pb2.Schema):
  return named_tuple_from_schema(schema)


def check_block_type(element_type):
  """Fails at construction when Java's blocks have other fields than these."""
  try:
    names = [n for n, _ in schemas.named_fields_from_element_type(element_type)]
  except (TypeError, ValueError):
    return
  expected = [n for n, _ in IN_FIELDS]
  if names != expected:
    raise ValueError(f'RunInference: the blocks from Java have fields {names}; '
                     f'this Python version reads {expected}. {_MISMATCH}')


def decode_rows(coder_impl, data: bytes, count: int) -> List[Any]:
  stream = create_InputStream(data)
  return [coder_impl.decode_from_stream(stream, True) for _ in range(count)]


def rest_schema(schema: schema_pb2.Schema,
                tensor_fields: Sequence[str]) -> schema_pb2.Schema:
  """The rows' schema without the fields that cross as tensors, in order:
  what a block with tensors carries of each row (as Java's
  ``RowBlocks.RowSplit``). Its id is derived from the rows' schema."""
  rest = schema_pb2.Schema()
  rest.CopyFrom(schema)
  del rest.fields[:]
  for field in schema.fields:
    if field.name not in tensor_fields:
      rest.fields.add().CopyFrom(field)
  for position, field in enumerate(rest.fields):
    field.encoding_position = position
  rest.encoding_positions_set = False
  rest.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f'xinfer-rest/{schema.id}'))
  return rest


def whole_rows(row_type, rest_impl, data: bytes, count: int,
               tensors: Dict[str, np.ndarray]) -> List[Any]:
  """The rows (of ``row_type``, a named tuple) of a block with tensors: each
  row's rest, decoded, with its tensor fields' values from the tensors (as the
  rows' coder decodes them)."""
  fields = row_type._fields
  rows = []
  for i, rest in enumerate(decode_rows(rest_impl, data, count)):
    values = rest._asdict()
    for name, array in tensors.items():
      values[name] = array[i].tolist()
    rows.append(row_type(**{f: values[f] for f in fields}))
  return rows


class Tensor(NamedTuple):
  """One tensor of a block: the Row field it holds (an input) or the output
  field it becomes, its element type (``convert.BLOCK_ELEMENTS``) and how
  many array levels one record's value has."""
  name: str
  element: str
  rank: int

  @property
  def dtype(self) -> np.dtype:
    return convert.block_dtype(self.element)


# The outputs without declared outputs: each record's scores and class.
DEFAULT_OUTPUTS = (Tensor(convert.SCORES_FIELD, 'float32',
                          1), Tensor(convert.PREDICTED_CLASS_FIELD, 'int64', 0))


class Layout(NamedTuple):
  """What a block carries, fixed when the pipeline is built: the input
  tensors (Java's PackFn packs these fields) and the output tensors (Java's
  UnpackFn reads these outputs), each in order; ``declared``: the outputs
  are declared ones, else the scores and classes."""
  inputs: Tuple[Tensor, ...]
  outputs: Tuple[Tensor, ...]
  declared: bool

  @classmethod
  def of(cls, fields: Sequence[Tuple[str, Any]], feature_field: str,
         inputs: Sequence[convert.InputSpec],
         outputs: Sequence[convert.OutputSpec]) -> 'Layout':
    """The layout for rows of ``fields``: the feature field, or each named
    input's field (``inputs``, bound to the fields); the declared outputs,
    or the scores and classes. Fails with the version message for a field
    Java cannot have packed."""
    if inputs:
      tensors = tuple(Tensor(s.field, s.element, s.rank) for s in inputs)
    else:
      element, rank = convert.field_element(dict(fields).get(feature_field))
      tensors = (Tensor(feature_field, element, rank), )
    out = tuple(Tensor(s.name, s.element, s.rank)
                for s in outputs) if outputs else DEFAULT_OUTPUTS
    for what, tensor in [('input field', t) for t in tensors] + [('output', t)
                                                                 for t in out]:
      if tensor.element not in convert.BLOCK_ELEMENTS:
        raise ValueError(
            f"RunInference: the {what} '{tensor.name}' is "
            f'{tensor.element or "not a number"}; it cannot cross in blocks '
            f'(numbers and booleans only). {_MISMATCH}')
    return cls(tensors, out, bool(outputs))


def tensors_of(block, layout: Layout) -> Optional[Dict[str, np.ndarray]]:
  """The block's input tensors by field, each batch first; None when Java
  sent none (the rows' values are null or differ in shape)."""
  if not block.tensors:
    return None
  count = int(block.count)
  if len(block.tensors) != len(layout.inputs) or len(block.shapes) != len(
      layout.inputs):
    raise ValueError(
        f'RunInference: a block from Java has {len(block.tensors)} tensors; '
        f'this Python version reads {len(layout.inputs)} '
        f'({", ".join(t.name for t in layout.inputs)}). {_MISMATCH}')
  out = {}
  for tensor, data, shape in zip(layout.inputs, block.tensors, block.shapes):
    shape = tuple(int(d) for d in shape)
    values = np.frombuffer(data, dtype=tensor.dtype)
    if len(shape) != tensor.rank or values.size != count * int(np.prod(shape)):
      raise ValueError(
          f"RunInference: a block from Java holds field '{tensor.name}' as "
          f'{values.size} {tensor.element} values of per-row shape '
          f'{list(shape)} for {count} rows. {_MISMATCH}')
    out[tensor.name] = values.reshape((count, ) + shape)
  return out


def pack(values: Sequence[Optional[np.ndarray]],
         tensor: Tensor) -> Tuple[List[int], bytes]:
  """An output tensor from per-record values (None: the record got no
  prediction): (shape, bytes). The shape is one record's when all share it,
  a failed record's slot then zeros; otherwise each record's shape in turn
  (a failed record's all zeros), and the values one record after another."""
  arrays = [
      None if v is None else np.asarray(v, dtype=tensor.dtype) for v in values
  ]
  shapes = {a.shape for a in arrays if a is not None}
  if len(shapes) <= 1:
    shape = shapes.pop() if shapes else (0, ) * tensor.rank
    blank = np.zeros(shape, dtype=tensor.dtype)
    data = np.stack([blank if a is None else a for a in arrays])
    return list(shape), data.tobytes()
  each = []
  for a in arrays:
    each.extend((0, ) * tensor.rank if a is None else a.shape)
  data = b''.join(a.tobytes() for a in arrays if a is not None)
  return each, data


class BlockInference(beam.DoFn):
  """Runs the model on each block; predictions as an output block, failures
  (dead letter) as failure Rows on the ``failures`` output."""
  def __init__(self, handler: handlers.RowModelHandler, schema_b64: str,
               layout: Layout, inference_args: Optional[Dict[str, Any]],
               dead_letter: bool, failures_tag: str, failure_error):
    self._handler = handler
    self._schema_b64 = schema_b64
    self._layout = layout
    self._inference_args = inference_args or {}
    self._dead_letter = dead_letter
    self._failures_tag = failures_tag
    self._failure_error = failure_error
    self._shared = shared.Shared()
    self._slot = None
    self._coder = None
    self._rest_coder = None
    self._row_type = None
    self._load_millis = None
    ns = metrics.NAMESPACE
    self._inferences = Metrics.counter(ns, metrics.NUM_INFERENCES)
    self._packed = Metrics.counter(ns, metrics.PACKED_RECORDS)
    self._predictions = Metrics.counter(ns, metrics.PREDICTIONS)
    self._failures = Metrics.counter(ns, metrics.FAILURES)
    self._by_model = metrics.ModelCounters()
    self._batch_size = Metrics.distribution(ns, metrics.BATCH_SIZE)
    self._batch_bytes = Metrics.distribution(ns, metrics.BATCH_BYTE_SIZE)
    self._latency = Metrics.distribution(ns, metrics.BATCH_LATENCY_MICROS)
    self._load_latency = Metrics.distribution(ns,
                                              metrics.LOAD_MODEL_LATENCY_MILLIS)

  def setup(self):
    schema = input_schema(self._schema_b64)
    self._coder = RowCoder(schema).get_impl()
    self._row_type = row_type_of(schema)
    self._rest_coder = RowCoder(
        rest_schema(schema, [t.name for t in self._layout.inputs])).get_impl()

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
    tensors = tensors_of(block, self._layout)
    done = None
    if tensors is not None:
      done = self._handler.run_block(tensors, self._slot, self._inference_args)
    failed = []
    if done is None:
      columns, model_id, failed = self._record_by_record(block, tensors)
    else:
      outputs, model_id = done
      columns = self._columns(outputs, count)
      self._packed.inc(count)
    self._inferences.inc(count)
    self._batch_size.update(count)
    self._batch_bytes.update(
        sum(len(t) for t in block.tensors) or len(block.rows))
    self._latency.update(int((time.monotonic() - started) * 1e6))
    self._predictions.inc(count - len(failed))
    if count > len(failed):
      self._by_model.inc(model_id or '', count - len(failed))
    for failure in failed:
      self._failures.inc()
      yield beam.pvalue.TaggedOutput(self._failures_tag, failure[1])
    yield beam.Row(count=count,
                   rows=block.rows,
                   timestamps=block.timestamps,
                   model_id=model_id or '',
                   skipped=np.asarray([i for i, _ in failed],
                                      dtype='<i4').tobytes(),
                   shapes=[shape for shape, _ in columns],
                   tensors=[data for _, data in columns],
                   input_shapes=block.shapes,
                   input_tensors=block.tensors)

  def _columns(self, outputs, count: int) -> List[Tuple[List[int], bytes]]:
    """The output tensors of a block the model ran whole: (shape, bytes)
    each, in the layout's order."""
    if not self._layout.declared:
      scores = outputs.reshape(count, -1).astype('<f4', copy=False)
      classes = (np.argmax(scores, axis=1) if scores.shape[1] else np.full(
          count, -1)).astype('<i8')
      return [([scores.shape[1]], scores.tobytes()), ([], classes.tobytes())]
    columns = []
    for tensor in self._layout.outputs:
      array = outputs[tensor.name].astype(tensor.dtype, copy=False)
      columns.append((list(array.shape[1:]), array.tobytes()))
    return columns

  def _record_by_record(self, block, tensors: Optional[Dict[str, np.ndarray]]):
    """The block's rows through the handler one by one: (output tensors,
    model id, failures as (index, failure Row))."""
    count = int(block.count)
    rows = (decode_rows(
        self._coder, block.rows, count) if tensors is None else whole_rows(
            self._row_type, self._rest_coder, block.rows, count, tensors))
    results = self._handler.run_inference(rows, self._slot,
                                          self._inference_args)
    values: Dict[str, List[Any]] = {t.name: [] for t in self._layout.outputs}
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
        for column in values.values():
          column.append(None)
      elif not self._layout.declared:
        scores = np.asarray(outcome, dtype=np.float32).reshape(-1)
        values[convert.SCORES_FIELD].append(scores)
        values[convert.PREDICTED_CLASS_FIELD].append(
            int(np.argmax(scores)) if scores.size else -1)
      else:
        for name, column in values.items():
          column.append(outcome[name])
    model_id = results[0].model_id if results else self._slot.model_id
    columns = [pack(values[t.name], t) for t in self._layout.outputs]
    return columns, model_id, failed
