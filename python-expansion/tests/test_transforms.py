import csv
import json
import typing
import os
from typing import Sequence

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that

import xinfer_digits as digits
from xinfer import metrics, transforms


def labelled_rows(n):
  features, labels = digits.load_digits()
  return [
      beam.Row(id=np.int64(i),
               label=np.int64(labels[i]),
               features=[np.float32(v) for v in features[i]]) for i in range(n)
  ]


def read_reference(digits_dir):
  path = os.path.join(digits_dir, f'{digits.MODEL_NAME}.reference.csv')
  with open(path) as f:
    return {
        int(r['id']): (int(r['predicted_class']),
                       [float(r[f's{i}']) for i in range(10)])
        for r in csv.DictReader(f)
    }


def test_row_inference_in_a_pipeline_matches_the_reference(
    digits_dir, model_dir):
  reference = read_reference(digits_dir)
  rows = labelled_rows(200)

  def check(outputs):
    assert len(outputs) == 200
    assert sorted(o.id for o in outputs) == list(range(200))
    for o in outputs:
      expected_class, expected_scores = reference[o.id]
      assert o.predicted_class == expected_class, o.id
      np.testing.assert_allclose(o.scores,
                                 expected_scores,
                                 rtol=1e-5,
                                 atol=1e-6)
      assert o.model_id == digits.MODEL_NAME
      assert len(o.features) == 64

  with TestPipeline() as p:
    out = (p
           | beam.Create(rows)
           | transforms.RowInference(model_uri=model_dir,
                                     feature_field='features',
                                     max_batch_size=32))
    assert_that(out, check)


def test_output_schema_is_input_plus_inference(model_dir):
  with TestPipeline() as p:
    out = (p | beam.Create(labelled_rows(2))
           | transforms.RowInference(model_uri=model_dir,
                                     feature_field='features'))
    names = [name for name, _ in out.element_type._fields]
    assert names == [
        'id', 'label', 'features', 'scores', 'predicted_class', 'model_id'
    ]


def test_missing_feature_field_fails_at_construction(model_dir):
  p = TestPipeline()
  with pytest.raises(ValueError, match="no field 'pixels'"):
    _ = (p | beam.Create(labelled_rows(1))
         | transforms.RowInference(model_uri=model_dir, feature_field='pixels'))


def test_missing_model_fails_at_construction(tmp_path):
  with pytest.raises(FileNotFoundError, match='no model at'):
    transforms.RowInference(model_uri=str(tmp_path / 'missing'),
                            feature_field='features')


def test_bad_record_fails_the_pipeline_naming_it(model_dir):
  rows = labelled_rows(3) + [
      beam.Row(
          id=np.int64(99), label=np.int64(1), features=[np.float32(1)] * 63)
  ]
  with pytest.raises(Exception, match=r"id=99.*'features' has 63 values"):
    with TestPipeline() as p:
      _ = (p | beam.Create(rows)
           | transforms.RowInference(model_uri=model_dir,
                                     feature_field='features'))


def bad_rows():
  """One record per way a record can be bad, each with its id."""
  def bad(i, features):
    return beam.Row(id=np.int64(i), label=np.int64(0), features=features)

  return [
      bad(1001, [np.float32(1)] * 63),
      bad(1002, None),
      bad(1003, [np.float32('nan')] + [np.float32(1)] * 63),
      bad(1004, [np.float32('inf')] * 64),
  ]


def test_dead_letter_output_keeps_bad_records_and_counts_reconcile(model_dir):
  good = labelled_rows(40)

  def check_predictions(outputs):
    assert sorted(o.id for o in outputs) == list(range(40))

  def check_failures(failures):
    by_id = {f.input.id: f for f in failures}
    assert sorted(by_id) == [1001, 1002, 1003, 1004]
    assert {f.stage for f in failures} == {'conversion'}
    assert {f.error_type for f in failures} == {'RecordError'}
    assert 'has 63 values' in by_id[1001].error_message
    assert 'is null' in by_id[1002].error_message
    assert 'nan' in by_id[1003].error_message
    assert '64 non-finite' in by_id[1004].error_message
    assert by_id[1001].model_id == digits.MODEL_NAME
    assert by_id[1001].key is None

  with TestPipeline() as p:
    out = (p | beam.Create(good + bad_rows()).with_output_types(
        transforms_row_type(typing.Optional[typing.Sequence[np.float32]]))
           | transforms.RowInference(model_uri=model_dir,
                                     feature_field='features',
                                     dead_letter=True,
                                     max_batch_size=8))
    assert_that(out['predictions'], check_predictions, label='predictions')
    assert_that(out['failures'], check_failures, label='failures')


def test_keyed_inference_with_two_models(digits_dir, model_dir):
  rows = labelled_rows(20)
  keyed = [('tf' if i % 2 else 'sk', r)
           for i, r in enumerate(rows)] + [('nobody', rows[0])]
  models = [
      {
          'keys': ['tf'],
          'model_uri': model_dir
      },
      {
          'keys': ['sk'],
          'model_uri': os.path.join(digits_dir, 'digits-sklearn.joblib')
      },
  ]

  def check(outputs):
    assert len(outputs) == 20
    for key, o in outputs:
      assert o.model_id == ('digits-mlp'
                            if key == 'tf' else 'digits-sklearn.joblib')
      assert (o.id % 2 == 1) == (key == 'tf')

  def check_failures(failures):
    assert [(f.key, f.stage, f.input.id)
            for f in failures] == [('nobody', 'routing', 0)]

  with TestPipeline() as p:
    out = (p
           | beam.Create(keyed).with_output_types(typing.Tuple[str, typing.Any])
           | beam.Map(lambda kv: kv).with_output_types(
               typing.Tuple[str, transforms_row_type()])
           | transforms.RowInference(models=json.dumps(models),
                                     keyed=True,
                                     dead_letter=True,
                                     max_models_in_memory=1))
    assert_that(out['predictions'], check, label='predictions')
    assert_that(out['failures'], check_failures, label='failures')


def test_predictions_are_counted_by_the_id_of_the_model_that_made_them(
    digits_dir, model_dir):
  rows = labelled_rows(20)
  models = [
      {
          'keys': ['tf'],
          'model_uri': model_dir
      },
      {
          'keys': ['sk'],
          'model_uri': os.path.join(digits_dir, 'digits-sklearn.joblib')
      },
  ]
  p = TestPipeline()
  _ = (p
       | beam.Create([('tf' if i < 15 else 'sk', r) for i, r in enumerate(rows)
                      ]).with_output_types(typing.Tuple[str, typing.Any])
       | beam.Map(lambda kv: kv).with_output_types(
           typing.Tuple[str, transforms_row_type()])
       | transforms.RowInference(models=json.dumps(models), keyed=True))
  result = p.run()
  result.wait_until_finish()
  counters = result.metrics().query(MetricsFilter().with_namespace(
      metrics.NAMESPACE))['counters']
  by_model = {
      c.key.metric.name: c.committed
      for c in counters
      if c.key.metric.name.startswith(metrics.PREDICTIONS_BY_MODEL_PREFIX)
  }
  assert by_model == {
      metrics.predictions_by_model('digits-mlp'): 15,
      metrics.predictions_by_model('digits-sklearn.joblib'): 5,
  }


def transforms_row_type(features_type=typing.Sequence[np.float32]):
  from apache_beam.typehints import row_type
  return row_type.RowTypeConstraint.from_fields([('id', np.int64),
                                                 ('label', np.int64),
                                                 ('features', features_type)])


def test_several_models_need_keyed_input(model_dir):
  with pytest.raises(ValueError, match='several models need keyed input'):
    transforms.RowInference(models=[{'keys': ['a'], 'model_uri': model_dir}])
