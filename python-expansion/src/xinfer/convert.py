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


def check_feature_field(fields: Sequence[Tuple[str, Any]], feature_field: str):
  """Fails at construction when the feature field is missing or not numeric."""
  names = [name for name, _ in fields]
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
        'FieldType.FLOAT) or DOUBLE/INT32/INT64).')
  clashes = [name for name, _ in INFERENCE_FIELDS if name in names]
  if clashes:
    raise ValueError(
        f"RunInference: the input already has field(s) {', '.join(clashes)}, which "
        'the output adds. Rename or drop them before RunInference.')


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


def _expected_size(input_shape: Sequence[Optional[int]]) -> Optional[int]:
  dims = list(input_shape)[1:]
  if any(d is None for d in dims):
    return None
  return int(np.prod(dims)) if dims else 1


def row_to_array(row,
                 feature_field: str,
                 input_shape: Sequence[Optional[int]],
                 dtype=np.float32) -> np.ndarray:
  """One record's features as an array of the model's per-example shape.

  ``input_shape`` is the model's input shape including the batch dimension,
  e.g. ``(None, 64)``. Raises RecordError naming the record, the field, the
  expected shape and what was found.
  """
  values = getattr(row, feature_field, None)
  where = (f"RunInference: record {describe_record(row, feature_field)}: field "
           f"'{feature_field}'")
  shape_text = tuple(input_shape)
  if values is None:
    raise RecordError(
        f'{where} is null; the model expects an array of shape {shape_text}. '
        'Filter or fill null features before RunInference.')
  if isinstance(values, (str, bytes)):
    raise RecordError(
        f'{where} holds text {values[:_MAX_SHOWN_CHARS]!r}; the model expects '
        f'numbers of shape {shape_text}.')
  values = list(values)
  for i, v in enumerate(values):
    if v is None or isinstance(
        v, (str, bytes, bool)) or not isinstance(v, (int, float, np.number)):
      raise RecordError(
          f'{where}[{i}] is {v!r}; every value must be a number (model input '
          f'shape {shape_text}).')
  expected = _expected_size(input_shape)
  if expected is not None and len(values) != expected:
    raise RecordError(
        f'{where} has {len(values)} values; the model input {shape_text} needs '
        f'{expected} per record. Fix the record or use a model whose input '
        'matches.')
  array = np.asarray(values, dtype=dtype)
  dims = list(input_shape)[1:]
  if expected is not None and len(dims) != 1:
    array = array.reshape(dims)
  return array


def rows_to_batch(rows: Sequence[Any],
                  feature_field: str,
                  input_shape: Sequence[Optional[int]],
                  dtype=np.float32) -> np.ndarray:
  """A batch of records as one model input tensor (batch dimension first)."""
  return np.stack(
      [row_to_array(row, feature_field, input_shape, dtype) for row in rows])


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
  values[SCORES_FIELD] = [float(s) for s in scores]
  values[PREDICTED_CLASS_FIELD] = int(np.argmax(scores)) if scores.size else -1
  values[MODEL_ID_FIELD] = result.model_id or ''
  return beam.Row(**values)
