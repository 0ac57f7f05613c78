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


def test_with_room_for_two_of_three_the_least_recently_used_goes(tmp_path):
  mapped = []
  for name in ('A', 'B', 'C'):
    (tmp_path / name).write_text('1')
    mapped.append(([name.lower()],
                   FakeHandler(str(tmp_path / name), feature_field='features')))
  keyed = handlers.KeyedRowModelHandler(mapped, max_models_in_memory=2)
  cache = keyed.load_model()
  FakeHandler.loads.clear()
  for key in ('a', 'b', 'c', 'b', 'a', 'c', 'a'):
    keyed.run_inference([(key, rows(1)[0])], cache)
  # c evicts a (least recently used); b, used since, stays when a comes back
  # and evicts c; c then evicts b; a, used last but one, stays.
  assert FakeHandler.loads == ['A', 'B', 'C', 'A', 'C']


def test_keys_of_one_model_share_one_loaded_model(tmp_path):
  shared = fake(tmp_path, name='shared')
  keyed = handlers.KeyedRowModelHandler([(['x', 'y'], shared)],
                                        max_models_in_memory=1)
  cache = keyed.load_model()
  FakeHandler.loads.clear()
  results = keyed.run_inference([('x', rows(2)[1]), ('y', rows(2)[1])], cache)
  keyed.run_inference([('y', rows(1)[0]), ('x', rows(1)[0])], cache)
  assert FakeHandler.loads == ['shared']
  assert {r.model_id for _, r in results} == {'shared'}
