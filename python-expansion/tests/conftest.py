import os

import pytest


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """The demo's data, model and reference (reused from XINFER_MODELS_DIR if set)."""
  import xinfer_digits as digits
  out = os.environ.get('XINFER_MODELS_DIR') or str(
      tmp_path_factory.mktemp('models'))
  digits.prepare(out)
  return out


@pytest.fixture(scope='session')
def model_dir(digits_dir):
  import xinfer_digits as digits
  return os.path.join(digits_dir, digits.MODEL_NAME)
