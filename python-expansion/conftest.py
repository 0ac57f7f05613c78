"""Shared by every test folder (tests/, bench/tests/)."""

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
