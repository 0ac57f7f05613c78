"""Keyed inference (xinfer.handlers.keyed)."""

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


def test_keyed_handler_routes_keys_and_bounds_models_in_memory(tmp_path):
  (tmp_path / 'double').write_text('2')
  one = fake(tmp_path, name='one')
  two = FakeHandler(str(tmp_path / 'double'), feature_field='features')
  keyed = handlers.KeyedRowModelHandler([(['a', 'b'], one), (['c'], two)],
                                        max_models_in_memory=1)
  cache = keyed.load_model()
  FakeHandler.loads.clear()
  batch = [('a', rows(2)[1]), ('c', rows(2)[1]), ('b', rows(3)[2])]
  results = keyed.run_inference(batch, cache)
  assert [(k, outcome(r), r.model_id)
          for k, r in results] == [('a', 3.0, 'one'), ('c', 6.0, 'double'),
                                   ('b', 6.0, 'one')]
  keyed.run_inference([('c', rows(1)[0])], cache)
  # One model at a time: 'one', then 'double'; 'double' stays for the next batch.
  assert FakeHandler.loads == ['one', 'double']
  keyed.run_inference([('a', rows(1)[0])], cache)
  assert FakeHandler.loads == ['one', 'double', 'one']
  with pytest.raises(KeyError, match="key 'z' has no model.*a, b, c"):
    keyed.run_inference([('z', rows(1)[0])], cache)


def test_keyed_handler_with_a_default_takes_any_key(tmp_path):
  keyed = handlers.KeyedRowModelHandler([], default=fake(tmp_path))
  results = keyed.run_inference([('x', rows(2)[1])], keyed.load_model())
  assert [(k, outcome(r)) for k, r in results] == [('x', 3.0)]


def test_keyed_handler_rejects_a_key_mapped_twice(tmp_path):
  with pytest.raises(ValueError, match="key 'a' is mapped to two models"):
    handlers.KeyedRowModelHandler([(['a'], fake(tmp_path)),
                                   (['a'], fake(tmp_path))])
