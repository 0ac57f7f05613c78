"""Model refresh (xinfer.handlers.versions and the refresh in base)."""

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


def test_refresh_serves_the_newest_version_and_survives_a_broken_one(tmp_path):
  (tmp_path / 'v1').write_text('1')
  handler = FakeHandler(str(tmp_path / 'v*'),
                        feature_field='features',
                        refresh_interval_secs=0.05)
  slot = handler.load_model()
  assert [outcome(r) for r in handler.run_inference(rows(2), slot)] == [0, 3]
  (tmp_path / 'v2').write_text('not a number')
  time.sleep(0.1)
  results = handler.run_inference(rows(2), slot)
  assert {r.model_id for r in results} == {'v1'}
  (tmp_path / 'v10').write_text('2')
  time.sleep(0.1)
  results = handler.run_inference(rows(2), slot)
  assert {r.model_id for r in results} == {'v10'}
  assert [outcome(r) for r in results] == [0, 6]


def test_refresh_needs_a_first_version_and_no_fixed_id(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing matches.*'.*v\\*'"):
    FakeHandler(str(tmp_path / 'v*'),
                feature_field='f',
                refresh_interval_secs=1).check_model_exists()
  with pytest.raises(ValueError, match="don't also set model_id"):
    FakeHandler('m', feature_field='f', refresh_interval_secs=1, model_id='x')


def test_latest_version_sorts_numbers_naturally(tmp_path):
  for name in ('v2', 'v10', 'v9', '.v99'):
    (tmp_path / name).mkdir()
  assert handlers.latest_version(str(tmp_path / '*')).endswith('v10')


def test_a_refresh_swaps_model_version_and_id_as_one(tmp_path):
  (tmp_path / 'v1').write_text('1')
  handler = FakeHandler(str(tmp_path / 'v*'),
                        feature_field='features',
                        refresh_interval_secs=0.05)
  slot = handler.load_model()
  before = slot.serving
  (tmp_path / 'v2').write_text('2')
  time.sleep(0.1)
  handler.run_inference(rows(1), slot)
  after = slot.serving
  # A reader that took the old one keeps a consistent old triple; the new one
  # is a new object whose model, version and id belong together.
  assert before is not after
  assert (before.version.endswith('v1'), before.model_id) == (True, 'v1')
  assert (after.version.endswith('v2'), after.model_id) == (True, 'v2')
  assert after.model is not before.model


def test_a_model_that_does_not_load_fails_its_records_not_the_worker(
    tmp_path, monkeypatch):
  model = tmp_path / 'model'
  model.write_text('not a number')
  handler = FakeHandler(str(model), feature_field='features')
  slot = handler.load_model()  # does not raise
  results = handler.run_inference(rows(2), slot)
  failures = [r.inference for r in results]
  assert all(isinstance(f, handlers.Failure) for f in failures), failures
  assert {f.error_type for f in failures} == {'ModelLoadError'}
  assert 'could not be loaded on this worker' in failures[0].message
  assert 'ValueError' in failures[0].message
  # Once the file is good, the next try loads it.
  model.write_text('2')
  monkeypatch.setattr(handlers.base, 'LOAD_RETRY_SECS', 0.05)
  time.sleep(0.1)
  assert [outcome(r) for r in handler.run_inference(rows(2), slot)] == [0, 6]
