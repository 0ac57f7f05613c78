"""Rows to tensors and predictions to Rows: the one place xinfer converts.

The input is a Beam Row (a Java ``Row`` arrives in Python as a named tuple).
In the single-input form its feature field holds an array of numbers, and the
output Row keeps every input field and adds ``scores`` (float32 array),
``predicted_class`` (int64) and ``model_id``.

With named inputs (:class:`InputSpec`, ``withInput`` in Java) each model input
comes from a field of its own, its dtype from the field's type (numbers, arrays
of arrays for N-d tensors, strings, bytes) and its shape from the spec or the
model. With declared outputs (:class:`OutputSpec`, ``withOutput``) the output
Row keeps the input fields and adds each declared output, converted to its
declared type per record (:func:`output_values`; a mismatch is the record's
failure), then ``model_id``.
"""

import collections.abc
import typing
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.typehints import row_type
from apache_beam.typehints import schemas

SCORES_FIELD = 'scores'
PREDICTED_CLASS_FIELD = 'predicted_class'
MODEL_ID_FIELD = 'model_id'
INFERENCE_FIELDS: Tuple[Tuple[str, Any], ...] = (
    (SCORES_FIELD, Sequence[np.float32]),
    (PREDICTED_CLASS_FIELD, np.int64),
    (MODEL_ID_FIELD, str),
)

_NUMERIC_TYPES = (np.float16, np.float32, np.float64, float, np.int8, np.int16,
                  np.int32, np.int64, int)

# How much of a record an error message shows.
_MAX_SHOWN_FIELDS = 6
_MAX_SHOWN_CHARS = 40


class RecordError(ValueError):
  """A record that cannot become a model input; the message says which and why."""


def schema_fields(element_type) -> List[Tuple[str, Any]]:
  """The (name, type) fields of a schema'd PCollection's element type."""
  try:
    return list(schemas.named_fields_from_element_type(element_type))
  except (TypeError, ValueError) as e:
    raise TypeError(
        'RunInference needs a PCollection of Rows with a schema; got elements of '
        f'type {element_type!r}. In Java, give the input a schema '
        '(PCollection.setRowSchema); in Python, use beam.Row or a NamedTuple '
        'with with_output_types.') from e


def _element_type_of_array(field_type) -> Optional[Any]:
  origin = typing.get_origin(field_type)
  if origin is None:
    return None
  if origin is typing.Union:
    non_null = [a for a in typing.get_args(field_type) if a is not type(None)]
    return _element_type_of_array(non_null[0]) if len(non_null) == 1 else None
  if isinstance(origin, type) and issubclass(
      origin,
      collections.abc.Iterable) and not issubclass(origin, (str, bytes)):
    args = typing.get_args(field_type)
    return args[0] if args else None
  return None


def check_feature_field(fields: Sequence[Tuple[str, Any]],
                        feature_field: str,
                        preprocessed: bool = False):
  """Fails at construction when the feature field is missing or not numeric
  (with a preprocess function, that function makes the model input instead)."""
  names = [name for name, _ in fields]
  clashes = [name for name, _ in INFERENCE_FIELDS if name in names]
  if clashes:
    raise ValueError(
        f"RunInference: the input already has field(s) {', '.join(clashes)}, which "
        'the output adds. Rename or drop them before RunInference.')
  if preprocessed:
    return
  if feature_field not in names:
    raise ValueError(
        f"RunInference: the input has no field '{feature_field}' (fields: "
        f"{', '.join(names)}). Name the field holding the model input with "
        'feature_field= (withFeatureField in Java).')
  field_type = dict(fields)[feature_field]
  element = _element_type_of_array(field_type)
  if element is None or element not in _NUMERIC_TYPES:
    raise TypeError(
        f"RunInference: field '{feature_field}' has type {field_type!r}; the model "
        'input must be an array of numbers (Java: Schema.FieldType.array('
        'FieldType.FLOAT) or DOUBLE/INT32/INT64), or name a preprocess '
        'function that makes it.')


def output_type(
    fields: Sequence[Tuple[str, Any]]) -> row_type.RowTypeConstraint:
  """The output Row type: the input fields, then the inference fields."""
  return row_type.RowTypeConstraint.from_fields(
      list(fields) + list(INFERENCE_FIELDS))


def describe_record(row, feature_field: str) -> str:
  """A short description of a record for error messages, without its features."""
  try:
    items = row._asdict().items()
  except AttributeError:
    items = vars(row).items() if hasattr(row, '__dict__') else []
  shown = []
  for name, value in items:
    if name == feature_field:
      continue
    text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS:
      text = text[:_MAX_SHOWN_CHARS] + '...'
    shown.append(f'{name}={text}')
    if len(shown) == _MAX_SHOWN_FIELDS:
      shown.append('...')
      break
  return '{' + ', '.join(shown) + '}'


def expected_size(
    input_shape: Optional[Sequence[Optional[int]]]) -> Optional[int]:
  if input_shape is None:
    return None
  dims = list(input_shape)[1:]
  if any(d is None for d in dims):
    return None
  return int(np.prod(dims)) if dims else 1


NAN_REJECT = 'reject'
NAN_ALLOW = 'allow'
NAN_POLICIES = (NAN_REJECT, NAN_ALLOW)


def check_nan_policy(policy: str):
  if policy not in NAN_POLICIES:
    raise ValueError(f"RunInference: nan_policy '{policy}' is not one of "
                     f"{', '.join(NAN_POLICIES)} (withNanPolicy in Java).")


def to_model_input(values,
                   row,
                   feature_field: str,
                   input_shape: Optional[Sequence[Optional[int]]],
                   dtype=np.float32,
                   nan_policy: str = NAN_REJECT) -> np.ndarray:
  """One record's model input as an array of the model's per-example shape.

  ``values`` is the record's feature field (or what a preprocess function made
  of the record). ``input_shape`` is the model's input shape including the batch
  dimension, e.g. ``(None, 64)``; ``None`` dimensions (or a ``None`` shape: the
  model does not say) are not checked. Raises
  RecordError naming the record, the field, the expected shape and what was
  found.
  """
  where = (f"RunInference: record {describe_record(row, feature_field)}: field "
           f"'{feature_field}'")
  shape_text = 'unknown' if input_shape is None else tuple(input_shape)
  if values is None:
    raise RecordError(
        f'{where} is null; the model expects an array of shape {shape_text}. '
        'Filter or fill null features before RunInference.')
  if isinstance(values, (str, bytes)):
    raise RecordError(
        f'{where} holds text {values[:_MAX_SHOWN_CHARS]!r}; the model expects '
        f'numbers of shape {shape_text}.')
  array = values if isinstance(values, np.ndarray) else np.asarray(values)
  if array.dtype.kind not in 'fiu':
    # Slow path, only for a bad record: find and name the value that is not a number.
    values = list(values)
    for i, v in enumerate(values):
      if v is None or isinstance(
          v, (str, bytes, bool)) or not isinstance(v, (int, float, np.number)):
        raise RecordError(
            f'{where}[{i}] is {v!r}; every value must be a number (model input '
            f'shape {shape_text}).')
    array = np.asarray(values)
  expected = expected_size(input_shape)
  if expected is not None and array.size != expected:
    raise RecordError(
        f'{where} has {array.size} values; the model input {shape_text} needs '
        f'{expected} per record. Fix the record or use a model whose input '
        'matches.')
  if nan_policy == NAN_REJECT and array.dtype.kind == 'f':
    bad = np.flatnonzero(~np.isfinite(array.reshape(-1)))
    if bad.size:
      first = int(bad[0])
      raise RecordError(
          f'{where}[{first}] is {float(array.reshape(-1)[first])} ({bad.size} '
          'non-finite value(s)); the NaN policy is reject. Clean the record, or '
          "let the model see it with nan_policy='allow' (withNanPolicy(ALLOW) "
          'in Java).')
  array = array.astype(dtype, copy=False)
  if expected is not None:
    array = array.reshape(list(input_shape)[1:])
  return array


def scores_to_result(row, scores: np.ndarray,
                     model_id: str) -> PredictionResult:
  return PredictionResult(example=row,
                          inference=np.asarray(scores).reshape(-1),
                          model_id=model_id)


def to_output_row(result: PredictionResult, field_names: Iterable[str]):
  """The output Row for one prediction: input fields plus inference fields
  (declared outputs, when ``result.inference`` holds them as a dict)."""
  import apache_beam as beam
  row = result.example
  values = {name: getattr(row, name) for name in field_names}
  if isinstance(result.inference, dict):
    values.update(result.inference)
    values[MODEL_ID_FIELD] = result.model_id or ''
    return beam.Row(**values)
  scores = np.asarray(result.inference, dtype=np.float32).reshape(-1)
  values[SCORES_FIELD] = scores.tolist()
  values[PREDICTED_CLASS_FIELD] = int(np.argmax(scores)) if scores.size else -1
  values[MODEL_ID_FIELD] = result.model_id or ''
  return beam.Row(**values)


# The dead-letter output: one Row per record that got no prediction.
FAILURE_FIELDS: Tuple[Tuple[str, Any], ...] = (
    ('key', Optional[str]),
    ('stage', str),
    ('error_type', str),
    ('error_message', str),
    ('model_id', Optional[str]),
)


def failure_type(input_type) -> row_type.RowTypeConstraint:
  """The failure Row type: the original input Row, then why it failed."""
  return row_type.RowTypeConstraint.from_fields([('input', input_type)] +
                                                list(FAILURE_FIELDS))


def to_failure_row(example,
                   stage: str,
                   error_type: str,
                   message: str,
                   model_id: Optional[str] = None,
                   key: Optional[str] = None):
  import apache_beam as beam
  return beam.Row(input=example,
                  key=key,
                  stage=stage,
                  error_type=error_type,
                  error_message=message,
                  model_id=model_id)


# --- named inputs and declared outputs ----------------------------------------

# Element types, by the names Java sends (``RunInference.withOutput``): the
# Python type a Row field of that type holds, and how Java names it.
_TYPES = {
    'float32': (np.float32, 'FLOAT'),
    'float64': (float, 'DOUBLE'),
    'int8': (np.int8, 'BYTE'),
    'int16': (np.int16, 'INT16'),
    'int32': (np.int32, 'INT32'),
    'int64': (np.int64, 'INT64'),
    'bool': (bool, 'BOOLEAN'),
    'str': (str, 'STRING'),
    'bytes': (bytes, 'BYTES'),
}
_TEXT = ('str', 'bytes')
# The element type of a schema field's Python type (the inverse of _TYPES).
_ELEMENT_OF = {
    np.float32: 'float32',
    float: 'float64',
    np.float64: 'float64',
    np.int8: 'int8',
    np.int16: 'int16',
    np.int32: 'int32',
    np.int64: 'int64',
    int: 'int64',
    bool: 'bool',
    str: 'str',
    bytes: 'bytes',
}
# Which numpy kinds each element type takes from a model output.
_KINDS = {'float': 'fiu', 'int': 'iub', 'bool': 'b'}


class OutputError(ValueError):
  """A model output that does not fit the declared output; names both."""


def parse_type(text: str) -> Tuple[str, int]:
  """``array<array<float32>>`` -> ('float32', 2)."""
  rank = 0
  inner = text.strip()
  while inner.startswith('array<') and inner.endswith('>'):
    inner = inner[len('array<'):-1].strip()
    rank += 1
  if inner not in _TYPES:
    raise ValueError(
        f"RunInference: output type '{text}' is not one of "
        f"{', '.join(_TYPES)}, or array<...> of them; the Java and Python "
        'halves of xinfer are from different versions: re-run ./xinfer setup.')
  return inner, rank


def java_type(element: str, rank: int) -> str:
  """How Java writes a type: ARRAY<ARRAY<FLOAT>>."""
  text = _TYPES[element][1]
  for _ in range(rank):
    text = f'ARRAY<{text}>'
  return text


def python_type(element: str, rank: int):
  """The Python type of a Row field holding this type."""
  result = _TYPES[element][0]
  for _ in range(rank):
    result = Sequence[result]
  return result


class OutputSpec(NamedTuple):
  """One declared output: the output field (and the model's output of that
  name) and its type, as :func:`parse_type` reads it."""
  name: str
  element: str
  rank: int

  @property
  def java(self) -> str:
    return java_type(self.element, self.rank)


class InputSpec(NamedTuple):
  """One named model input: the model's input name, the Row field it comes
  from, the per-record shape when given (``withInputShape``), and the element
  type and rank the field's schema type has (set by :func:`bind_inputs`)."""
  name: str
  field: str
  shape: Optional[Tuple[int, ...]] = None
  element: Optional[str] = None
  rank: int = 0


def parse_outputs(outputs) -> Tuple[OutputSpec, ...]:
  """Declared outputs from ``[{"name": ..., "type": ...}, ...]``."""
  if not outputs:
    return ()
  specs, seen = [], set()
  for item in outputs:
    name = item.get('name')
    if not name or 'type' not in item:
      raise ValueError(
          f'RunInference: an output needs a name and a type; got {item!r}.')
    if name in seen:
      raise ValueError(f"RunInference: output '{name}' is declared twice.")
    seen.add(name)
    specs.append(OutputSpec(name, *parse_type(item['type'])))
  if MODEL_ID_FIELD in seen:
    raise ValueError(
        f"RunInference: '{MODEL_ID_FIELD}' is the field each prediction's model "
        'id goes to; name the output otherwise.')
  return tuple(specs)


def parse_inputs(inputs) -> Tuple[InputSpec, ...]:
  """Named inputs from ``[{"name": ..., "field": ..., "shape": [...]}, ...]``."""
  if not inputs:
    return ()
  specs, seen = [], set()
  for item in inputs:
    name, field = item.get('name'), item.get('field')
    if not name or not field:
      raise ValueError(
          f'RunInference: an input needs a name and a field; got {item!r}.')
    if name in seen:
      raise ValueError(f"RunInference: input '{name}' is declared twice.")
    seen.add(name)
    shape = item.get('shape')
    if shape is not None:
      shape = tuple(int(d) for d in shape)
      if not shape or any(d < 1 for d in shape):
        raise ValueError(
            f"RunInference: input '{name}' has shape {list(shape)}; give each "
            'dimension as a positive number.')
    specs.append(InputSpec(name, field, shape))
  return tuple(specs)


def field_element(field_type) -> Tuple[Optional[str], int]:
  """The element type and array nesting of a schema field's Python type."""
  rank = 0
  while True:
    inner = _element_type_of_array(field_type)
    if inner is None:
      break
    field_type, rank = inner, rank + 1
  origin = typing.get_origin(field_type)
  if origin is typing.Union:
    non_null = [a for a in typing.get_args(field_type) if a is not type(None)]
    field_type = non_null[0] if len(non_null) == 1 else None
  return _ELEMENT_OF.get(field_type), rank


def bind_inputs(fields: Sequence[Tuple[str, Any]],
                specs: Sequence[InputSpec]) -> Tuple[InputSpec, ...]:
  """The specs with each field's element type and rank; fails at construction
  on a missing field or a type that cannot be a model input."""
  types = dict(fields)
  bound = []
  for spec in specs:
    if spec.field not in types:
      raise ValueError(
          f"RunInference: input '{spec.name}' reads field '{spec.field}', but "
          f"the input has no such field (fields: {', '.join(types)}).")
    element, rank = field_element(types[spec.field])
    if element is None:
      raise TypeError(
          f"RunInference: input '{spec.name}' reads field '{spec.field}' of type "
          f'{types[spec.field]!r}; a model input is a number, a string, bytes, '
          'or an array (of arrays) of numbers or strings.')
    if spec.shape is not None and element in _TEXT and rank == 0:
      raise ValueError(
          f"RunInference: input '{spec.name}' is one {element} per record; it "
          'has no shape to give (drop withInputShape).')
    bound.append(spec._replace(element=element, rank=rank))
  return tuple(bound)


def check_output_fields(fields: Sequence[Tuple[str, Any]],
                        specs: Sequence[OutputSpec]):
  names = {name for name, _ in fields}
  clashes = [s.name for s in specs if s.name in names]
  if MODEL_ID_FIELD in names:
    clashes.append(MODEL_ID_FIELD)
  if clashes:
    raise ValueError(
        f"RunInference: the input already has field(s) {', '.join(clashes)}, "
        'which the output adds. Rename or drop them before RunInference, or '
        'name the outputs otherwise.')


def declared_output_type(fields: Sequence[Tuple[str, Any]],
                         specs: Sequence[OutputSpec]):
  """The output Row type with declared outputs: input fields, each output,
  then ``model_id``."""
  return row_type.RowTypeConstraint.from_fields(
      list(fields) + [(s.name, python_type(s.element, s.rank))
                      for s in specs] + [(MODEL_ID_FIELD, str)])


def _input_shape(spec, model_shape) -> Optional[tuple]:
  """The input's shape with the batch first (``None``: any size): the one
  ``withInputShape`` gave, else the model's, else None (unknown)."""
  if spec.shape is not None:
    return (None, ) + tuple(spec.shape)
  if model_shape is not None:
    return tuple(model_shape)
  return None


def to_named_input(row,
                   spec: InputSpec,
                   model_shape: Optional[Sequence[Optional[int]]] = None,
                   model_dtype=None,
                   nan_policy: str = NAN_REJECT):
  """One record's value for one named input: a string or bytes as it is, an
  array of strings as an object array, numbers as an array of the model's
  dtype (else the field's) and shape (``spec.shape``, else the model's
  per-record shape, else the value's own nesting). Raises RecordError naming
  the record, the field and what is wrong."""
  value = getattr(row, spec.field, None)
  where = (f'RunInference: record {describe_record(row, spec.field)}: field '
           f"'{spec.field}' (model input '{spec.name}')")
  if value is None:
    raise RecordError(f'{where} is null; filter or fill it before '
                      'RunInference.')
  if spec.element in _TEXT:
    if spec.rank == 0:
      return value
    array = np.empty(len(value), dtype=object)
    array[:] = list(value)
    if spec.shape is not None:
      if array.size != int(np.prod(spec.shape)):
        raise RecordError(f'{where} has {array.size} values; withInputShape '
                          f'gives {list(spec.shape)}.')
      array = array.reshape(spec.shape)
    return array
  dtype = model_dtype or np.dtype(_TYPES[spec.element][0])
  if spec.element == 'bool' and spec.rank > 0:
    # Checked as numbers (0 and 1), handed over as booleans.
    checked = to_named_input(row, spec._replace(element='int8'), model_shape,
                             np.int8, NAN_ALLOW)
    return checked.astype(dtype)
  if spec.rank == 0:
    if isinstance(value, (str, bytes)):
      raise RecordError(f'{where} is {value!r}; it must be a number.')
    return np.asarray(value, dtype=dtype)
  try:
    array = np.asarray(value, dtype=np.dtype(_TYPES[spec.element][0]))
  except (TypeError, ValueError) as e:
    if spec.rank == 1:
      # The per-value message names the value that is not a number.
      to_model_input(value, row, spec.field, None, dtype, nan_policy)
    raise RecordError(
        f'{where} is not a rectangular array of numbers ({e}); an N-d input '
        'needs every inner array of one length.') from e
  shape = _input_shape(spec, model_shape)
  if shape is not None and None in shape[1:]:
    known = [d for d in shape[1:] if d is not None]
    if array.ndim != len(shape) - 1 or any(
        d is not None and d != n for d, n in zip(shape[1:], array.shape)):
      raise RecordError(
          f'{where} has shape {array.shape}; the model input takes '
          f'{tuple(shape)} (None: any size; {len(known)} fixed).')
    shape = None
  return to_model_input(array, row, spec.field, shape, dtype, nan_policy)


def stack(values: Sequence[Any]):
  """A batch from per-record inputs: arrays stacked, strings as an object
  array, named inputs (dicts) per name."""
  first = values[0]
  if isinstance(first, dict):
    return {name: stack([v[name] for v in values]) for name in first}
  if isinstance(first, (str, bytes)):
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array
  return np.stack(values)


def per_record(outputs, n: int) -> List[Any]:
  """A batch's model outputs as one output per record: a batch-first array,
  a dict of them (named outputs) or a tuple of them (positional outputs)."""
  if isinstance(outputs, dict):
    columns = {name: _batch_first(v, n, name) for name, v in outputs.items()}
    return [{name: c[i] for name, c in columns.items()} for i in range(n)]
  if isinstance(outputs, tuple):
    columns = [_batch_first(v, n, f'#{i}') for i, v in enumerate(outputs)]
    return [tuple(c[i] for c in columns) for i in range(n)]
  return list(_batch_first(outputs, n, None))


def _batch_first(value, n: int, name: Optional[str]):
  if isinstance(value, list) and len(value) == n:
    return value
  array = as_numpy(value)
  if array.shape[:1] != (n, ):
    which = f"output '{name}' " if name else ''
    raise ValueError(
        f'RunInference: the model returned {which}of shape {array.shape} for a '
        f'batch of {n}; it must return one output per record (batch dimension '
        'first).')
  return array


def as_numpy(value):
  """A tensor of any framework as a numpy array (others as they are)."""
  if isinstance(value, np.ndarray):
    return value
  if hasattr(value, 'detach'):  # torch
    value = value.detach().cpu()
  if hasattr(value, 'numpy') and callable(value.numpy):  # torch, tensorflow
    return value.numpy()
  return np.asarray(value)


def default_scores(output) -> np.ndarray:
  """The scores of the single-output form from one record's output: an
  array; the first of a tuple; the one entry of a dict."""
  if isinstance(output, tuple) and output:
    output = output[0]
  if isinstance(output, dict):
    if len(output) != 1:
      raise OutputError(
          f"RunInference: the model has outputs {', '.join(map(str, output))}; "
          'declare the ones to keep, with their types (withOutput(name, type) '
          'in Java).')
    output = next(iter(output.values()))
  array = as_numpy(output)
  if array.dtype.kind not in 'fiub':
    raise OutputError(
        f'RunInference: the model output is {_describe(array)}, not numbers; '
        'declare its type with withOutput(name, FieldType.STRING) (Java).')
  return array


def output_values(output, specs: Sequence[OutputSpec]) -> dict:
  """One record's declared outputs, by name, as Row field values. A model
  output of another type or shape raises OutputError naming the output, what
  it is and what was declared."""
  if isinstance(output, dict):
    missing = [s.name for s in specs if s.name not in output]
    if missing:
      raise OutputError(
          f"RunInference: the model has no output(s) {', '.join(missing)} "
          f"(its outputs: {', '.join(map(str, output))}); declare outputs by "
          "the model's output names.")
    chosen = [(s, output[s.name]) for s in specs]
  elif isinstance(output, tuple):
    if len(output) != len(specs):
      raise OutputError(
          f'RunInference: the model returned {len(output)} outputs, in order, '
          f'and {len(specs)} were declared '
          f"({', '.join(s.name for s in specs)}); declare one per output, in "
          'the order the model returns them.')
    chosen = list(zip(specs, output))
  else:
    if len(specs) != 1:
      raise OutputError(
          f'RunInference: the model returned one output and {len(specs)} were '
          f"declared ({', '.join(s.name for s in specs)}).")
    chosen = [(specs[0], output)]
  return {spec.name: _coerce(value, spec) for spec, value in chosen}


def _describe(array: np.ndarray) -> str:
  if array.ndim == 0:
    return f'a {array.dtype} scalar ({array.item()!r:.40})'
  return f'a {array.dtype} array of shape {array.shape}'


def _coerce(value, spec: OutputSpec):
  if isinstance(value, (str, bytes, np.str_, np.bytes_)):
    array = np.asarray(value, dtype=object)
  else:
    array = as_numpy(value)
    if array.dtype.kind in 'USO' and array.dtype != object:
      array = array.astype(object)
  while array.ndim > spec.rank and 1 in array.shape:
    array = array.squeeze(axis=array.shape.index(1))
  if array.ndim != spec.rank:
    raise OutputError(
        f"RunInference: output '{spec.name}' is {_describe(array)}; it was "
        f'declared {spec.java} ({spec.rank} dimension(s)). Declare the type '
        'the model returns.')
  if spec.element in _TEXT:
    flat = array.reshape(-1)
    if not all(isinstance(v, (str, bytes)) for v in flat):
      raise OutputError(
          f"RunInference: output '{spec.name}' is {_describe(array)}; it was "
          f'declared {spec.java}. Declare a numeric type, or make text in a '
          'postprocess function.')
    convert_one = ((lambda v: v.decode('utf-8') if isinstance(v, bytes) else v)
                   if spec.element == 'str' else
                   (lambda v: v.encode('utf-8') if isinstance(v, str) else v))
    if spec.rank == 0:
      return convert_one(array.item())
    return np.vectorize(convert_one, otypes=[object])(array).tolist()
  kinds = _KINDS['float' if spec.element.startswith('float') else
                 ('bool' if spec.element == 'bool' else 'int')]
  if array.dtype.kind not in kinds:
    raise OutputError(
        f"RunInference: output '{spec.name}' is {_describe(array)}; it was "
        f'declared {spec.java}. Declare the type the model returns.')
  return array.astype(np.dtype(_TYPES[spec.element][0])).tolist()


# --- blocks: a batch's tensors at once -----------------------------------------
#
# Rows that cross in blocks (``xinfer.blocks``) reach the handler as one array
# per input field, batch first. The functions below are the batch forms of the
# per-record conversions above: each gives what converting the records one by
# one and stacking them would give, or None when some record would fail; the
# block then goes record by record, so that record fails alone with the stage
# and message it gets without blocks.

# The element types that cross in blocks, as tensors (numbers and booleans).
BLOCK_ELEMENTS = ('float32', 'float64', 'int8', 'int16', 'int32', 'int64',
                  'bool')


def block_dtype(element: str) -> np.dtype:
  """The little-endian dtype of an element type in a block."""
  return np.dtype(_TYPES[element][0]).newbyteorder('<')


def block_features(x: np.ndarray,
                   input_shape: Optional[Sequence[Optional[int]]],
                   dtype,
                   nan_policy: str = NAN_REJECT) -> Optional[np.ndarray]:
  """The batch form of :func:`to_model_input`: ``x`` holds one record per
  row."""
  expected = expected_size(input_shape)
  if expected is not None and int(np.prod(x.shape[1:])) != expected:
    return None
  if (nan_policy == NAN_REJECT and x.dtype.kind == 'f'
      and not np.isfinite(x).all()):
    return None
  x = x.astype(dtype, copy=False)
  if expected is not None:
    x = x.reshape((len(x), ) + tuple(input_shape)[1:])
  return x


def block_input(x: np.ndarray,
                spec: InputSpec,
                model_shape: Optional[Sequence[Optional[int]]] = None,
                model_dtype=None,
                nan_policy: str = NAN_REJECT) -> Optional[np.ndarray]:
  """The batch form of :func:`to_named_input` for a numeric input: ``x``
  holds the records' values of ``spec.field``, batch first."""
  dtype = model_dtype or np.dtype(_TYPES[spec.element][0])
  if spec.rank == 0:
    return x.astype(dtype, copy=False)
  shape = _input_shape(spec, model_shape)
  if shape is not None and None in shape[1:]:
    if x.ndim != len(shape) or any(d is not None and d != n
                                   for d, n in zip(shape[1:], x.shape[1:])):
      return None
    shape = None
  return block_features(x, shape, dtype, nan_policy)


def _batch_columns(outputs, n: int):
  """A batch's model outputs with every array batch first (as
  :func:`per_record` needs them), or None."""
  def column(value):
    try:
      array = as_numpy(value)
    except (TypeError, ValueError):
      return None
    return array if array.shape[:1] == (n, ) else None

  if isinstance(outputs, dict):
    columns = {name: column(v) for name, v in outputs.items()}
    return None if any(c is None for c in columns.values()) else columns
  if isinstance(outputs, tuple):
    columns = tuple(column(v) for v in outputs)
    return None if any(c is None for c in columns) else columns
  return column(outputs)


def block_scores(outputs, n: int) -> Optional[np.ndarray]:
  """The batch form of :func:`per_record` and :func:`default_scores`: the
  scores of ``n`` records, batch first."""
  columns = _batch_columns(outputs, n)
  if isinstance(columns, tuple):
    columns = columns[0] if columns else None
  if isinstance(columns, dict):
    columns = next(iter(columns.values())) if len(columns) == 1 else None
  if columns is None or columns.dtype.kind not in 'fiub':
    return None
  return columns


def block_outputs(outputs, specs: Sequence[OutputSpec],
                  n: int) -> Optional[dict]:
  """The batch form of :func:`per_record` and :func:`output_values`: each
  declared output of ``n`` records as an array of its declared type, batch
  first, by name."""
  columns = _batch_columns(outputs, n)
  if columns is None:
    return None
  if isinstance(columns, dict):
    if any(s.name not in columns for s in specs):
      return None
    chosen = [(s, columns[s.name]) for s in specs]
  elif isinstance(columns, tuple):
    if len(columns) != len(specs):
      return None
    chosen = list(zip(specs, columns))
  else:
    if len(specs) != 1:
      return None
    chosen = [(specs[0], columns)]
  values = {}
  for spec, array in chosen:
    if spec.element in _TEXT or array.dtype.kind in 'USO':
      return None
    while array.ndim - 1 > spec.rank and 1 in array.shape[1:]:
      array = array.squeeze(axis=1 + array.shape[1:].index(1))
    kinds = _KINDS['float' if spec.element.startswith('float') else
                   ('bool' if spec.element == 'bool' else 'int')]
    if array.ndim - 1 != spec.rank or array.dtype.kind not in kinds:
      return None
    values[spec.name] = array.astype(np.dtype(_TYPES[spec.element][0]),
                                     copy=False)
  return values
