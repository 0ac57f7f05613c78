import csv
import os
from typing import Sequence

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from xinfer import digits
from xinfer import transforms


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
