"""Each framework module (tensorflow_inference, pytorch_inference, sklearn_inference, onnx_inference) against its own plain-Python prediction, and their options."""

import csv
import hashlib
import os
import pickle
import re
import sys
import time

import apache_beam as beam
import numpy as np
import pytest

import xinfer_digits as digits
from xinfer import handlers
from xinfer import modules
from xinfer import transforms

from handler_fakes import FakeHandler, explode, fake, outcome, rows, run  # pylint: disable=unused-import
from handler_fakes import restore_allowlist  # pylint: disable=unused-import


def test_model_class_must_be_an_allowed_nn_module_subclass():
  def pytorch(model_class):
    return handlers.create_handler('pytorch',
                                   'm.pt',
                                   feature_field='f',
                                   model_class=model_class)

  with pytest.raises(PermissionError,
                     match="model_class 'os:system' is in module 'os'"):
    pytorch('os:system')
  modules.configure(['os', 'collections'])
  for path in ('os:system', 'collections:OrderedDict'):
    with pytest.raises(TypeError,
                       match=f"model_class '{path}' is .*; it must be an "
                       'nn.Module subclass'):
      pytorch(path)
  handler = pytorch(TORCH_STATE['model_class'])
  # The worker resolves the class again and checks it there too.
  handler._options['model_class'] = 'os:system'
  with pytest.raises(TypeError, match='must be an nn.Module subclass'):
    handler._load('m.pt')


def test_model_params_need_a_model_class():
  with pytest.raises(ValueError, match='model_params were given without'):
    handlers.create_handler('pytorch',
                            'm.pt',
                            feature_field='f',
                            model_params={'hidden': 3})


def read_reference(digits_dir, name):
  with open(os.path.join(digits_dir, f'{name}.reference.csv')) as f:
    return np.array([[float(r[f's{i}']) for i in range(10)]
                     for r in csv.DictReader(f)])


TORCH_STATE = {
    'model_class': 'xinfer.examples.nets:DigitsNet',
    'model_params': {
        'hidden': digits.TORCH_HIDDEN
    }
}


@pytest.mark.parametrize('name, options, inference_args, reference', [
    ('digits-mlp', {}, {}, 'digits-mlp'),
    ('digits-mlp.keras', {}, {}, 'digits-mlp.keras'),
    ('digits-torch.pt', {}, {}, 'digits-torch.pt'),
    ('digits-torch-state.pt', TORCH_STATE, {}, 'digits-torch-state.pt'),
    ('digits-torch-state.pt', TORCH_STATE, {
        'temperature': 2.0
    }, 'digits-torch-state.pt.t2'),
    ('digits-sklearn.joblib', {}, {}, 'digits-sklearn.joblib'),
    ('digits-sklearn.onnx', {}, {}, 'digits-sklearn.onnx'),
])
def test_each_framework_matches_its_own_prediction(digits_dir, name, options,
                                                   inference_args, reference):
  features, _ = digits.load_digits()
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir, name),
                                    feature_field='features',
                                    **options)
  batch = [beam.Row(id=i, features=list(features[i])) for i in range(64)]
  results = run(handler, batch, **inference_args)
  np.testing.assert_allclose(np.stack([r.inference for r in results]),
                             read_reference(digits_dir, reference)[:64],
                             rtol=1e-5,
                             atol=1e-6)
  assert {r.model_id for r in results} == {name}
