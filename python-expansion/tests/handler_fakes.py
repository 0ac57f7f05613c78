"""A fake framework handler and helpers for the handler tests: no model
framework, no pipeline."""

import os

import apache_beam as beam
import pytest

from xinfer import handlers
from xinfer import modules


@pytest.fixture(autouse=True)
def restore_allowlist():
  saved = modules.allowed()
  yield
  modules.configure(saved)


class FakeHandler(handlers.RowModelHandler):
  """Multiplies the sum of each record's 3 features by the number in the model
  file (1 when the file is empty); a record holding 13 makes the model raise."""
  accepts_inference_args = True
  loads = []

  def _load(self, path):
    FakeHandler.loads.append(os.path.basename(path))
    factor = 1.0
    if os.path.isfile(path):
      with open(path) as f:
        factor = float(f.read() or 1)

    def predict(x, offset=0.0):
      if (x == 13).any():
        raise ValueError('the model cannot take 13')
      return x.sum(axis=1, keepdims=True) * factor + offset

    return handlers.LoadedModel(predict, (None, 3))


def rows(n, width=3):
  return [beam.Row(id=i, features=[float(i)] * width) for i in range(n)]


def fake(tmp_path, name='fake', **kwargs):
  path = tmp_path / name
  path.write_text('')
  return FakeHandler(str(path), feature_field='features', **kwargs)


def run(handler, batch, **inference_args):
  return handler.run_inference(batch, handler.load_model(), inference_args)


def outcome(result):
  inference = result.inference
  if isinstance(inference, handlers.Failure):
    return inference.stage
  return float(inference[0])


def explode(_):
  raise RuntimeError('hook failed')
