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


def to_input(r, shape, **kwargs):
  return convert.to_model_input(r.features, r, 'features', shape, **kwargs)


def test_model_input_reshapes_to_the_model_input():
  array = to_input(row(), (None, 2, 2))
  assert array.dtype == np.float32
  np.testing.assert_array_equal(array, [[1, 2], [3, 4]])


def test_unknown_shape_is_not_checked():
  assert to_input(row(features=[1.0] * 5), None).shape == (5, )


def test_nan_and_inf_are_rejected_by_default_with_the_policy_named():
  with pytest.raises(
      convert.RecordError,
      match=r"id=5.*'features'\[2\] is .*nan.*2 non-finite.*reject"):
    to_input(row(id=5, features=[1.0, 2.0, float('nan'),
                                 float('inf')]), (None, 4))


def test_nan_is_passed_to_the_model_when_allowed():
  array = to_input(row(features=[1.0, float('nan'), 3.0, 4.0]), (None, 4),
                   nan_policy=convert.NAN_ALLOW)
  assert np.isnan(array[1])


def test_unknown_nan_policy_names_the_choices():
  with pytest.raises(ValueError, match="'drop' is not one of reject, allow"):
    convert.check_nan_policy('drop')


def test_preprocessed_feature_field_is_not_type_checked():
  convert.check_feature_field([('pixels', str)], 'pixels', preprocessed=True)


def test_failure_type_nests_the_input():
  input_type = convert.output_type(FIELDS[:1])
  names = [n for n, _ in convert.failure_type(input_type)._fields]
  assert names == [
      'input', 'key', 'stage', 'error_type', 'error_message', 'model_id'
  ]


def test_wrong_length_names_record_field_shape_and_found():
  with pytest.raises(convert.RecordError) as e:
    to_input(row(id=42, features=[1.0] * 3), (None, 4))
  message = str(e.value)
  assert 'id=42' in message and 'label=7' in message
  assert "field 'features'" in message
  assert 'has 3 values' in message and '(None, 4)' in message
  assert 'needs 4 per record' in message


def test_null_features_are_named():
  with pytest.raises(convert.RecordError, match=r"id=3.*'features' is null"):
    to_input(row(id=3, features=None), (None, 4))


def test_non_numeric_value_names_its_index():
  with pytest.raises(
      convert.RecordError,
      match=r"'features'\[2\] is 'x'; every value must be a number"):
    to_input(row(features=[1.0, 2.0, 'x', 4.0]), (None, 4))


def test_null_inside_the_array_is_named():
  with pytest.raises(convert.RecordError, match=r"'features'\[0\] is None"):
    to_input(row(features=[None, 2.0, 3.0, 4.0]), (None, 4))


def test_text_instead_of_array():
  with pytest.raises(convert.RecordError, match='holds text'):
    to_input(row(features='1,2,3,4'), (None, 4))


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
