"""Keyed inference and model refresh with each framework's example model
(README "Models and frameworks", key [V]).

Both are framework-independent code (``handlers.keyed``, the refresh in
``handlers.base``); here each framework runs them with a model set-up trains
and a second, different model of the same framework (set-up's second
SavedModel, or the first one changed here: scaled weights, fewer trees). Every
prediction is checked against what that framework computes for the model in
plain Python, and every model id against the file that made it."""

import csv
import os
import shutil
import time
import typing
from typing import Callable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pytest

import xinfer_digits as digits
from xinfer import handlers
from xinfer.handlers import huggingface_inference
from xinfer_digits import shaped

from handler_fakes import restore_allowlist  # pylint: disable=unused-import

RECORDS = 12
BEAM_SKLEARN = 'xinfer.examples.handlers:beam_sklearn'
TORCH_STATE = {
    'model_class': 'xinfer.examples.nets:DigitsNet',
    'model_params': {
        'hidden': digits.TORCH_HIDDEN
    }
}


def digit_pixels():
  features, _ = digits.load_digits()
  return features[:RECORDS]


def digit_rows():
  return [
      beam.Row(id=i, features=x.tolist()) for i, x in enumerate(digit_pixels())
  ]


DIGIT_FIELDS = [('id', np.int64), ('features', typing.Sequence[np.float32])]

# --- the second model of each framework, made from set-up's first ---------------


def keras_scaled(first: str, out: str) -> str:
  import keras
  model = keras.models.load_model(first)
  kernel, bias = model.layers[-1].get_weights()
  model.layers[-1].set_weights([kernel * 0.5, bias])
  second = os.path.join(out, 'digits-mlp-scaled.keras')
  model.save(second)
  return second


def _digits_net_scaled(state: str):
  import torch
  from xinfer.examples.nets import DigitsNet
  net = DigitsNet(hidden=digits.TORCH_HIDDEN)
  net.load_state_dict(torch.load(state, weights_only=True))
  with torch.no_grad():
    for parameter in net.parameters():
      parameter.mul_(0.5)
  return net.eval()


def torchscript_scaled(first: str, out: str) -> str:
  import torch
  net = _digits_net_scaled(
      first.replace('digits-torch.pt', 'digits-torch-state.pt'))
  second = os.path.join(out, 'digits-torch-scaled.pt')
  with torch.no_grad():
    torch.jit.save(torch.jit.trace(net, torch.from_numpy(digit_pixels()[:1])),
                   second)
  return second


def torch_state_scaled(first: str, out: str) -> str:
  import torch
  # 'state' in the name: xinfer_digits.reference_scores loads it as a state dict.
  second = os.path.join(out, 'digits-torch-state-scaled.pt')
  torch.save(_digits_net_scaled(first).state_dict(), second)
  return second


def _sklearn_scaled(first: str):
  import joblib
  model = joblib.load(first)
  model[-1].coef_ = model[-1].coef_ * 0.5
  return model


def sklearn_scaled(first: str, out: str) -> str:
  import joblib
  second = os.path.join(out, 'digits-sklearn-scaled.joblib')
  joblib.dump(_sklearn_scaled(first), second)
  return second


def onnx_scaled(first: str, out: str) -> str:
  from skl2onnx import to_onnx
  model = _sklearn_scaled(first.replace('.onnx', '.joblib'))
  second = os.path.join(out, 'digits-sklearn-scaled.onnx')
  with open(second, 'wb') as f:
    f.write(
        to_onnx(model,
                digit_pixels()[:1],
                options={
                    'zipmap': False
                },
                target_opset=17).SerializeToString())
  return second


def xgboost_fewer_trees(first: str, out: str) -> str:
  import xgboost
  booster = xgboost.Booster()
  booster.load_model(first)
  second = os.path.join(out, 'diabetes-50-trees.xgb.json')
  booster[:50].save_model(second)
  return second


def hugging_face_biased(first: str, out: str) -> str:
  huggingface_inference.keep_triton_out_on_cpu()
  import torch
  import transformers
  second = os.path.join(out, 'vader-sentiment-biased')
  shutil.copytree(first, second)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(first)
  with torch.no_grad():
    model.classifier.bias += torch.tensor([1.5, -1.5])
  model.save_pretrained(second)
  return second


# --- each framework's rows and plain-Python outputs ------------------------------


def digit_scores(path: str) -> np.ndarray:
  return digits.reference_scores(path, digit_pixels())


def diabetes_rows(digits_dir):
  with open(os.path.join(digits_dir, shaped.DIABETES)) as f:
    return [
        beam.Row(id=int(r['id']),
                 features=[float(r[f'f{i}']) for i in range(10)])
        for r in csv.DictReader(f)
    ][:RECORDS]


def diabetes_predictions(path: str, rows) -> np.ndarray:
  features = np.asarray([r.features for r in rows])
  return np.asarray(
      [o['prediction'] for o in shaped.reference(shaped.XGB, path, features)])


def vader_rows(digits_dir):
  with open(os.path.join(digits_dir, shaped.VADER), encoding='utf-8') as f:
    return [
        beam.Row(id=int(r['id']), phrase=r['phrase']) for r in csv.DictReader(f)
    ][:RECORDS]


def vader_scores(path: str, rows) -> np.ndarray:
  huggingface_inference.keep_triton_out_on_cpu()
  return np.asarray([
      o['scores']
      for o in shaped.reference(shaped.TEXT, path, [r.phrase for r in rows])
  ])


def sklearn_classes_rolled(first: str, out: str) -> str:
  """Each class's coefficients moved to the next class: other predictions."""
  import joblib
  model = joblib.load(first)
  model[-1].coef_ = np.roll(model[-1].coef_, 1, axis=0)
  second = os.path.join(out, 'digits-sklearn-rolled.joblib')
  joblib.dump(model, second)
  return second


def sklearn_predictions(path: str) -> np.ndarray:
  import joblib
  return joblib.load(path).predict(digit_pixels().astype(np.float64))


class Case(NamedTuple):
  """One framework: set-up's model, how to make a second one, the handler's
  options, the records, and the plain-Python outputs of a model for them."""
  first: str
  second: Callable[[str, str], str]
  framework: Optional[str] = None
  options: dict = {}
  rows: Callable = lambda digits_dir: digit_rows()
  fields: List[Tuple[str, typing.Any]] = DIGIT_FIELDS
  plain: Callable = lambda path, rows: digit_scores(path)


CASES = {
    'tensorflow-savedmodel': Case(
        'digits-mlp', lambda first, out: first.replace('-mlp', '-mlp-v2')),
    'keras': Case('digits-mlp.keras', keras_scaled),
    'pytorch-torchscript': Case('digits-torch.pt', torchscript_scaled),
    'pytorch-state-dict': Case('digits-torch-state.pt',
                               torch_state_scaled,
                               framework='pytorch',
                               options=TORCH_STATE),
    'sklearn': Case('digits-sklearn.joblib', sklearn_scaled),
    'onnx': Case('digits-sklearn.onnx', onnx_scaled),
    'xgboost': Case(shaped.XGB,
                    xgboost_fewer_trees,
                    rows=diabetes_rows,
                    plain=diabetes_predictions),
    'huggingface': Case(
        shaped.TEXT,
        hugging_face_biased,
        options={'inputs': [{
            'name': 'text',
            'field': 'phrase'
        }]},
        rows=vader_rows,
        fields=[('id', np.int64), ('phrase', str)],
        plain=vader_scores),
    'beam-model-handler': Case(
        'digits-sklearn.joblib',
        sklearn_classes_rolled,
        framework='beam_model_handler',
        plain=lambda path, rows: sklearn_predictions(path)),
}


def handler_for(case: Case, path: str):
  if case.framework == 'beam_model_handler':
    # The factory is the "model"; the model file is its argument.
    return handlers.create_handler(case.framework,
                                   BEAM_SKLEARN,
                                   feature_field='features',
                                   model_params={'model_uri': path},
                                   model_id=os.path.basename(path))
  return handlers.create_handler(case.framework,
                                 path,
                                 feature_field='features',
                                 **case.options)


def outputs(predictions) -> np.ndarray:
  failures = [
      p.inference for p in predictions
      if isinstance(p.inference, handlers.Failure)
  ]
  assert not failures, failures[0]
  return np.stack([np.asarray(p.inference).reshape(-1) for p in predictions])


def assert_outputs(predictions, want):
  np.testing.assert_allclose(outputs(predictions),
                             np.asarray(want).reshape(len(predictions), -1),
                             rtol=1e-5,
                             atol=1e-6)


def version_name(path: str, n) -> str:
  """``v<n>`` with the model's suffix (the framework is told by it)."""
  name = os.path.basename(path)
  for suffix in ('.xgb.json', '.keras', '.pt', '.joblib', '.onnx'):
    if name.endswith(suffix):
      return f'v{n}{suffix}'
  return f'v{n}'


@pytest.mark.parametrize('name', list(CASES))
def test_keyed_models_and_a_refreshed_version_match_the_framework(
    digits_dir, tmp_path, name):
  case = CASES[name]
  first = os.path.join(digits_dir, case.first)
  second = case.second(first, str(tmp_path))
  rows = case.rows(digits_dir)
  want = {path: case.plain(path, rows) for path in (first, second)}
  # The two models differ, so a prediction tells which one made it.
  assert not np.allclose(want[first], want[second], rtol=1e-3)

  # Keyed: 'a' and 'b' run the first model, 'c' the second, with room for
  # one loaded model (each batch loads what it needs, unloading the other).
  keyed = handlers.KeyedRowModelHandler([(['a', 'b'], handler_for(case, first)),
                                         (['c'], handler_for(case, second))],
                                        max_models_in_memory=1)
  keyed.bind_schema(case.fields)
  cache = keyed.load_model()
  keys = ['a', 'c', 'b'] * RECORDS
  for batch_keys in (keys[:RECORDS], keys[RECORDS:2 * RECORDS]):
    results = keyed.run_inference(list(zip(batch_keys, rows)), cache)
    assert [k for k, _ in results] == batch_keys
    for i, (key, prediction) in enumerate(results):
      path = second if key == 'c' else first
      assert prediction.model_id == os.path.basename(path)
      assert_outputs([prediction], np.asarray(want[path])[i:i + 1])

  # Refresh: a glob of versions; v2 appears while v1 is served.
  if case.framework == 'beam_model_handler':
    with pytest.raises(ValueError,
                       match='a Beam ModelHandler loads its own model: model '
                       'refresh and model_sha256 apply to model files'):
      handlers.create_handler(case.framework,
                              BEAM_SKLEARN,
                              feature_field='features',
                              model_params={'model_uri': first},
                              refresh_interval_secs=1)
    return
  versions = tmp_path / 'versions'
  versions.mkdir()
  os.symlink(first, versions / version_name(first, 1))
  refreshed = handlers.create_handler(case.framework,
                                      str(versions / version_name(first, '*')),
                                      feature_field='features',
                                      refresh_interval_secs=0.05,
                                      **case.options)
  refreshed.bind_schema(case.fields)
  slot = refreshed.load_model()
  results = refreshed.run_inference(rows, slot)
  assert {r.model_id for r in results} == {version_name(first, 1)}
  assert_outputs(results, want[first])
  os.symlink(second, versions / version_name(second, 2))
  time.sleep(0.1)
  results = refreshed.run_inference(rows, slot)
  assert {r.model_id for r in results} == {version_name(second, 2)}
  assert_outputs(results, want[second])
