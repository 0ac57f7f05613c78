"""Rows to tensors and predictions to Rows: the one place xinfer converts.

The input is a Beam Row (a Java ``Row`` arrives in Python as a named tuple) whose
feature field holds an array of numbers. The output Row keeps every input field and
adds ``scores`` (float32 array), ``predicted_class`` (int64) and ``model_id``.
"""

import collections.abc
import typing
from typing import Any, Iterable, List, Optional, Sequence, Tuple

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
  if expected is not None and len(input_shape) != 2:
    array = array.reshape(list(input_shape)[1:])
  return array


def scores_to_result(row, scores: np.ndarray,
                     model_id: str) -> PredictionResult:
  return PredictionResult(example=row,
                          inference=np.asarray(scores).reshape(-1),
                          model_id=model_id)


def to_output_row(result: PredictionResult, field_names: Iterable[str]):
  """The output Row for one prediction: input fields plus inference fields."""
  import apache_beam as beam
  row = result.example
  scores = np.asarray(result.inference, dtype=np.float32).reshape(-1)
  values = {name: getattr(row, name) for name in field_names}
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
