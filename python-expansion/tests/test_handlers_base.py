"""The shared handler contract (xinfer.handlers.base): failures per record and stage, inference args, hooks, the module allowlist, model pinning, batching."""

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


def test_row_handler_runs_a_batch_and_keeps_each_example(tmp_path):
  results = run(fake(tmp_path), rows(3))
  assert [r.example.id for r in results] == [0, 1, 2]
  assert [outcome(r) for r in results] == [0.0, 3.0, 6.0]
  assert {r.model_id for r in results} == {'fake'}


def test_model_id_can_be_set(tmp_path):
  assert fake(tmp_path, model_id='v7').model_id == 'v7'


def test_a_bad_record_fails_alone_in_conversion(tmp_path):
  batch = rows(2) + [beam.Row(id=9, features=[1.0, 2.0])]
  results = run(fake(tmp_path), batch)
  assert [outcome(r) for r in results] == [0.0, 3.0, handlers.CONVERSION]
  failure = results[2].inference
  assert failure.error_type == 'RecordError'
  assert 'id=9' in failure.message and 'has 2 values' in failure.message


def test_a_record_the_model_rejects_fails_alone_in_inference(tmp_path):
  batch = rows(2) + [beam.Row(id=7, features=[13.0, 0.0, 0.0])] + rows(1)
  results = run(fake(tmp_path), batch)
  assert [outcome(r) for r in results] == [0.0, 3.0, handlers.INFERENCE, 0.0]
  assert results[2].inference.error_type == 'ValueError'
  assert results[2].inference.message == 'the model cannot take 13'


def test_nan_policy(tmp_path):
  batch = [beam.Row(id=1, features=[1.0, float('nan'), 1.0])]
  assert outcome(run(fake(tmp_path), batch)[0]) == handlers.CONVERSION
  allowed = run(fake(tmp_path, nan_policy='allow'), batch)[0]
  assert np.isnan(allowed.inference[0])


def test_inference_args_reach_the_model(tmp_path):
  results = run(fake(tmp_path), rows(2), offset=10.0)
  assert [outcome(r) for r in results] == [10.0, 13.0]


def test_inference_args_are_refused_where_the_model_takes_none(model_dir):
  handler = handlers.create_handler(None, model_dir, feature_field='features')
  with pytest.raises(ValueError, match='SavedModel signature takes only'):
    handler.validate_inference_args({'temperature': 2.0})
  handlers.create_handler(None, model_dir + '.keras',
                          feature_field='features').validate_inference_args(
                              {'training': False})


def test_preprocess_and_postprocess_hooks(tmp_path):
  handler = fake(tmp_path,
                 preprocess='xinfer.examples.hooks:parse_pixels',
                 postprocess='xinfer.examples.hooks:log_scores')
  results = run(handler, [beam.Row(id=1, pixels='1 2 3')])
  assert outcome(results[0]) == pytest.approx(np.log(6.0))


def test_failing_hooks_fail_only_their_record_in_their_stage(tmp_path):
  modules.configure(['handler_fakes'])
  pre = run(fake(tmp_path, preprocess='handler_fakes:explode'), rows(1))[0]
  assert pre.inference == handlers.Failure(handlers.PREPROCESSING,
                                           'RuntimeError', 'hook failed')
  post = run(fake(tmp_path, postprocess='handler_fakes:explode'), rows(1))[0]
  assert post.inference.stage == handlers.POSTPROCESSING


@pytest.mark.parametrize('path, message', [
    ('no_colon', "must be 'package.module:function'"),
    ('no_such_module_xyz:f', "cannot import module 'no_such_module_xyz'.*pip"),
    ('xinfer.examples.hooks:nope', "has no 'nope'"),
])
def test_hook_names_are_checked_with_the_fix(path, message):
  modules.configure(['no_such_module_xyz'])
  with pytest.raises(Exception, match=message):
    handlers.import_function(path, 'preprocess')


UNTRUSTED = 'xinfer_test_untrusted_hooks'


@pytest.fixture
def untrusted(tmp_path, monkeypatch):
  """A module in tmp_path that writes a marker file when imported; yields the
  marker."""
  marker = tmp_path / 'imported'
  (tmp_path / f'{UNTRUSTED}.py').write_text(
      f'open({str(marker)!r}, "w").close()\n'
      'def hook(row):\n'
      '  return [1.0, 2.0, 3.0]\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  yield marker
  sys.modules.pop(UNTRUSTED, None)


def test_a_hook_from_a_module_not_allowed_is_refused_unimported(
    tmp_path, untrusted):
  path = f'{UNTRUSTED}:hook'
  expected = (f"preprocess '{path}' is in module '{UNTRUSTED}', which the "
              'operator has not allowed (allowed: xinfer.examples). Allow it '
              f'when the services start: --xinferAllowedModules={UNTRUSTED}')
  with pytest.raises(PermissionError, match=re.escape(expected)):
    fake(tmp_path, preprocess=path)
  with pytest.raises(PermissionError, match=re.escape(expected)):
    handlers.import_function(path, 'preprocess')
  assert UNTRUSTED not in sys.modules and not untrusted.exists()

  modules.configure([UNTRUSTED])
  handler = fake(tmp_path, preprocess=path)
  on_worker = pickle.loads(pickle.dumps(handler))
  assert not untrusted.exists()  # constructing only checks the name
  assert outcome(run(handler, [beam.Row(id=1)])[0]) == 6.0
  assert untrusted.exists()  # the module's import side effect is live
  # A worker checks its own allowlist, even for a module already imported.
  modules.configure(None)
  with pytest.raises(PermissionError, match='--xinferAllowedModules'):
    on_worker.load_model()


def sha256_of(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


class RunsCodeWhenUnpickled:
  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (exec, (f'open({self.marker!r}, "w").close()', ))


def test_a_pinned_model_loads_when_its_digest_matches(tmp_path):
  path = tmp_path / 'model'
  path.write_text('2')
  handler = FakeHandler(str(path),
                        feature_field='features',
                        model_sha256=sha256_of(path).upper())
  assert [outcome(r) for r in run(handler, rows(2))] == [0.0, 6.0]


def test_a_pinned_pickle_that_differs_is_not_unpickled(tmp_path):
  marker = tmp_path / 'unpickled'
  path = tmp_path / 'model.pkl'
  path.write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker)))
  pinned = handlers.create_handler(None,
                                   str(path),
                                   feature_field='features',
                                   model_sha256='0' * 64)
  # The worker lives on; every record fails with the reason (a dead letter).
  slot = pinned.load_model()
  assert slot.unloaded
  [failed] = pinned.run_inference([beam.Row(features=[1.0] * 4)], slot)
  assert failed.inference.error_type == 'ModelLoadError'
  assert (f"the model file '{path}' has sha256 {sha256_of(path)}, but "
          f"model_sha256 is {'0' * 64}; it was not loaded"
          ) in failed.inference.message
  assert not marker.exists()
  # Unpinned, the same file runs its code when it is unpickled.
  assert handlers.create_handler(None, str(path),
                                 feature_field='features').load_model().unloaded
  assert marker.exists()


@pytest.mark.parametrize('name, digest, refresh, message', [
    ('m.pkl', 'abc', None, "model_sha256 'abc' is not a sha256 digest"),
    ('m.pkl', 'g' * 64, None, 'is not a sha256 digest'),
    ('v*', 'a' * 64, 1, 'model_sha256 pins one file, but with model refresh'),
    ('gs://bucket/m.pkl', 'a' * 64, None, 'needs a local model file'),
    ('.', 'a' * 64, None, "pins a single file, but '.*' is a directory"),
])
def test_unusable_pins_fail_at_construction(tmp_path, name, digest, refresh,
                                            message):
  model_uri = name if '://' in name else str(tmp_path / name)
  with pytest.raises(ValueError, match=message):
    FakeHandler(model_uri,
                feature_field='features',
                model_sha256=digest,
                refresh_interval_secs=refresh)


def test_a_pinned_path_that_became_a_directory_is_not_loaded(tmp_path):
  with pytest.raises(ValueError, match='pins a single file'):
    handlers.verify_sha256(str(tmp_path), 'a' * 64)


def test_row_inference_passes_model_sha256_to_each_model(tmp_path):
  path = tmp_path / 'm.pkl'
  path.write_bytes(b'x')
  with pytest.raises(ValueError, match='not a sha256 digest'):
    transforms.RowInference(model_uri=str(path), model_sha256='nope')
  with pytest.raises(ValueError, match='not a sha256 digest'):
    transforms.RowInference(models=[{
        'keys': ['a'],
        'model_uri': str(path),
        'model_sha256': 'nope'
    }],
                            keyed=True)
  pinned = transforms.RowInference(model_uri=str(path),
                                   model_sha256=sha256_of(path))
  assert pinned._model_handler._model_sha256 == sha256_of(path)


def test_batch_settings_are_validated_and_passed_to_beam():
  handler = FakeHandler('m',
                        feature_field='f',
                        min_batch_size=4,
                        max_batch_size=16,
                        max_batch_wait_secs=0.5)
  assert handler.batch_elements_kwargs() == {
      'min_batch_size': 4,
      'max_batch_size': 16,
      'max_batch_duration_secs': 0.5,
  }
  with pytest.raises(ValueError,
                     match='max_batch_size \\(2\\) must be at least'):
    FakeHandler('m', feature_field='f', min_batch_size=4, max_batch_size=2)
  with pytest.raises(ValueError, match='min_batch_size must be at least 1'):
    FakeHandler('m', feature_field='f', min_batch_size=0)


def test_missing_model_names_path_and_fix(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match=r"no model at '.*nope'.*setup"):
    handlers.check_model_uri(missing)
