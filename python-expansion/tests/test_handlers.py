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

from xinfer import digits
from xinfer import handlers
from xinfer import modules
from xinfer import transforms


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
  modules.configure(['test_handlers'])
  pre = run(fake(tmp_path, preprocess='test_handlers:explode'), rows(1))[0]
  assert pre.inference == handlers.Failure(handlers.PREPROCESSING,
                                           'RuntimeError', 'hook failed')
  post = run(fake(tmp_path, postprocess='test_handlers:explode'), rows(1))[0]
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
  with pytest.raises(ValueError) as e:
    pinned.load_model()
  assert (f"the model file '{path}' has sha256 {sha256_of(path)}, but "
          f"model_sha256 is {'0' * 64}; it was not loaded") in str(e.value)
  assert not marker.exists()
  # Unpinned, the same file runs its code when it is unpickled.
  with pytest.raises(AttributeError):
    handlers.create_handler(None, str(path),
                            feature_field='features').load_model()
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


@pytest.mark.parametrize('name, framework', [
    ('m.keras', 'tensorflow'),
    ('m.pt', 'pytorch'),
    ('m.pth', 'pytorch'),
    ('m.joblib', 'sklearn'),
    ('m.pkl', 'sklearn'),
    ('m.onnx', 'onnx'),
])
def test_framework_is_detected_from_the_name(name, framework):
  assert handlers.detect_framework('/models/' + name) == framework


def test_undetectable_framework_says_how_to_name_it(tmp_path):
  with pytest.raises(ValueError,
                     match='cannot tell the framework.*withFramework'):
    handlers.detect_framework(str(tmp_path / 'model.bin'))


def test_unknown_framework_lists_the_known_ones():
  with pytest.raises(ValueError,
                     match="unknown framework 'caffe'.*onnx, pytorch, sklearn"):
    handlers.create_handler('caffe', 'm', feature_field='f')


def test_missing_model_names_path_and_fix(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match=r"no model at '.*nope'.*setup"):
    handlers.check_model_uri(missing)


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
