from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import PredictionResult

from xinfer import convert

FIELDS = [('id', np.int64), ('label', np.int64),
          ('features', Sequence[np.float32])]


def row(id=1, features=(1.0, 2.0, 3.0, 4.0)):
  return beam.Row(id=id, label=7, features=features)


def test_row_to_array_reshapes_to_the_model_input():
  array = convert.row_to_array(row(), 'features', (None, 2, 2))
  assert array.dtype == np.float32
  np.testing.assert_array_equal(array, [[1, 2], [3, 4]])


def test_rows_to_batch_stacks_records():
  batch = convert.rows_to_batch([row(), row(id=2)], 'features', (None, 4))
  assert batch.shape == (2, 4)


def test_wrong_length_names_record_field_shape_and_found():
  with pytest.raises(convert.RecordError) as e:
    convert.row_to_array(row(id=42, features=[1.0] * 3), 'features', (None, 4))
  message = str(e.value)
  assert 'id=42' in message and 'label=7' in message
  assert "field 'features'" in message
  assert 'has 3 values' in message and '(None, 4)' in message
  assert 'needs 4 per record' in message


def test_null_features_are_named():
  with pytest.raises(convert.RecordError, match=r"id=3.*'features' is null"):
    convert.row_to_array(row(id=3, features=None), 'features', (None, 4))


def test_non_numeric_value_names_its_index():
  with pytest.raises(
      convert.RecordError,
      match=r"'features'\[2\] is 'x'; every value must be a number"):
    convert.row_to_array(row(features=[1.0, 2.0, 'x', 4.0]), 'features',
                         (None, 4))


def test_null_inside_the_array_is_named():
  with pytest.raises(convert.RecordError, match=r"'features'\[0\] is None"):
    convert.row_to_array(row(features=[None, 2.0, 3.0, 4.0]), 'features',
                         (None, 4))


def test_text_instead_of_array():
  with pytest.raises(convert.RecordError, match='holds text'):
    convert.row_to_array(row(features='1,2,3,4'), 'features', (None, 4))


def test_check_feature_field_missing_names_fields_and_fix():
  with pytest.raises(
      ValueError, match=r"no field 'pixels' \(fields: id, label, features\)"):
    convert.check_feature_field(FIELDS, 'pixels')


def test_check_feature_field_rejects_non_numeric_arrays():
  with pytest.raises(TypeError, match='must be an array of numbers'):
    convert.check_feature_field([('features', Sequence[str])], 'features')
  with pytest.raises(TypeError, match='must be an array of numbers'):
    convert.check_feature_field([('features', str)], 'features')


def test_check_feature_field_rejects_clashing_output_names():
  with pytest.raises(ValueError, match='already has field.*scores'):
    convert.check_feature_field(FIELDS + [('scores', Sequence[np.float32])],
                                'features')


def test_output_type_appends_inference_fields():
  fields = convert.output_type(FIELDS)._fields
  assert [name for name, _ in fields] == [
      'id', 'label', 'features', 'scores', 'predicted_class', 'model_id'
  ]


def test_to_output_row_keeps_input_and_adds_inference():
  result = PredictionResult(example=row(),
                            inference=np.array([0.1, 0.7, 0.2], np.float32),
                            model_id='m1')
  out = convert.to_output_row(result, ['id', 'label', 'features'])
  assert out.id == 1 and out.label == 7 and out.features == (1.0, 2.0, 3.0, 4.0)
  assert out.predicted_class == 1
  assert out.model_id == 'm1'
  np.testing.assert_allclose(out.scores, [0.1, 0.7, 0.2], rtol=1e-6)


def test_describe_record_truncates_long_values():
  text = convert.describe_record(beam.Row(name='x' * 100, features=[1.0]),
                                 'features')
  assert 'features' not in text and '...' in text


def test_check_feature_field_accepts_a_nullable_numeric_array():
  convert.check_feature_field([('features', Optional[Sequence[np.float32]])],
                              'features')
