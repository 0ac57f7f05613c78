import apache_beam as beam
import numpy as np
import pytest

from xinfer import digits
from xinfer import handlers


class FakeHandler(handlers.RowModelHandler):
  """Sums each record's features into a one-score output: no framework."""
  def load_model(self):
    return handlers.LoadedModel(lambda x: x.sum(axis=1, keepdims=True),
                                (None, 3))


def rows(n, width=3):
  return [beam.Row(id=i, features=[float(i)] * width) for i in range(n)]


def test_row_handler_runs_a_batch_and_keeps_each_example():
  handler = FakeHandler('/models/fake', feature_field='features')
  model = handler.load_model()
  results = handler.run_inference(rows(3), model)
  assert [r.example.id for r in results] == [0, 1, 2]
  assert [float(r.inference[0]) for r in results] == [0.0, 3.0, 6.0]
  assert {r.model_id for r in results} == {'fake'}


def test_model_id_can_be_set():
  handler = FakeHandler('/m/fake/', feature_field='features', model_id='v7')
  assert handler.model_id == 'v7'


def test_bad_record_fails_the_batch_with_its_description():
  handler = FakeHandler('/models/fake', feature_field='features')
  with pytest.raises(ValueError, match=r'id=1.*has 2 values'):
    handler.run_inference(
        rows(1) + [beam.Row(id=1, features=[1.0, 2.0])], handler.load_model())


def test_batch_bounds_are_validated_and_passed_to_beam():
  handler = FakeHandler('m',
                        feature_field='f',
                        min_batch_size=4,
                        max_batch_size=16)
  assert handler.batch_elements_kwargs() == {
      'min_batch_size': 4,
      'max_batch_size': 16
  }
  with pytest.raises(ValueError,
                     match='max_batch_size \\(2\\) must be at least'):
    FakeHandler('m', feature_field='f', min_batch_size=4, max_batch_size=2)
  with pytest.raises(ValueError, match='min_batch_size must be at least 1'):
    FakeHandler('m', feature_field='f', min_batch_size=0)


def test_unknown_framework_lists_the_known_ones():
  with pytest.raises(ValueError, match="unknown framework 'caffe'.*tensorflow"):
    handlers.create_handler('caffe', 'm', feature_field='f')


def test_missing_model_names_path_and_fix(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match=r"no model at '.*nope'.*setup"):
    handlers.check_model_uri(missing)


def test_tensorflow_handler_matches_plain_tensorflow(digits_dir, model_dir):
  features, _ = digits.load_digits()
  handler = handlers.tensorflow_handler(model_dir,
                                        feature_field='features',
                                        max_batch_size=64)
  model = handler.load_model()
  assert model.input_shape == (None, 64)
  batch = [beam.Row(id=i, features=list(features[i])) for i in range(50)]
  results = handler.run_inference(batch, model)
  expected = digits.reference_scores(model_dir, features[:50])
  np.testing.assert_allclose(np.stack([r.inference for r in results]),
                             expected,
                             rtol=1e-5,
                             atol=1e-6)
  assert {r.model_id for r in results} == {digits.MODEL_NAME}
