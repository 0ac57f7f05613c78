import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope='session')
def _temp_files_in_pytests_folder(tmp_path_factory):
  """Beam makes a folder per Pipeline and removes it only when the pipeline
  runs; the tests build many they never run, so temp files go to pytest's own
  folder rather than /tmp."""
  old = tempfile.tempdir
  tempfile.tempdir = str(tmp_path_factory.mktemp('temp'))
  yield
  tempfile.tempdir = old


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """The demo's data, model and reference (reused from XINFER_MODELS_DIR if set)."""
  from xinfer import digits
  out = os.environ.get('XINFER_MODELS_DIR') or str(
      tmp_path_factory.mktemp('models'))
  digits.prepare(out)
  return out


@pytest.fixture(scope='session')
def model_dir(digits_dir):
  from xinfer import digits
  return os.path.join(digits_dir, digits.MODEL_NAME)
