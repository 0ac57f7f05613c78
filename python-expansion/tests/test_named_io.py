"""Named, typed, shaped inputs and declared outputs: the conversion alone,
then each framework with the example models set-up trains
(``xinfer_digits.shaped``), checked against their plain-Python references."""

import json
import os
import typing

import apache_beam as beam
import numpy as np
import pytest

import xinfer_digits as digits
from xinfer import convert
from xinfer import handlers
from xinfer import modules
from xinfer import transforms
from xinfer_digits import shaped

from handler_fakes import restore_allowlist  # pylint: disable=unused-import

FIELDS = [('id', np.int64), ('pixels', typing.Sequence[np.float32]),
          ('grid', typing.Sequence[typing.Sequence[np.float32]]),
          ('ink', np.int64), ('text', str), ('png', bytes),
          ('mask', typing.Sequence[bool]),
          ('maybe', typing.Optional[typing.Sequence[np.int32]])]


def spec(name, field, shape=None):
  (bound, ) = convert.bind_inputs(
      FIELDS,
      convert.parse_inputs([{
          'name': name,
          'field': field,
          'shape': shape
      }]))
  return bound


def test_input_dtypes_follow_the_field_types():
  assert (spec('x', 'pixels').element, spec('x',
                                            'pixels').rank) == ('float32', 1)
  assert (spec('x', 'grid').element, spec('x', 'grid').rank) == ('float32', 2)
  assert (spec('x', 'ink').element, spec('x', 'ink').rank) == ('int64', 0)
  assert spec('x', 'text').element == 'str'
  assert spec('x', 'png').element == 'bytes'
  assert (spec('x', 'mask').element, spec('x', 'mask').rank) == ('bool', 1)
  assert (spec('x', 'maybe').element, spec('x', 'maybe').rank) == ('int32', 1)
  with pytest.raises(ValueError,
                     match="input 'x' reads field 'nope', but the input has "
                     'no such field'):
    spec('x', 'nope')
  with pytest.raises(ValueError, match='has no shape to give'):
    spec('x', 'text', [3])
  with pytest.raises(ValueError, match='give each dimension as a positive'):
    convert.parse_inputs([{'name': 'x', 'field': 'pixels', 'shape': [0, 2]}])


def test_each_record_becomes_a_tensor_of_its_type_and_shape():
  row = beam.Row(id=7,
                 pixels=[float(i) for i in range(64)],
                 grid=[[1.0, 2.0], [3.0, 4.0]],
                 ink=5,
                 text='great',
                 png=b'\x89PNG',
                 mask=[True, False],
                 maybe=[1, 2, 3])
  image = convert.to_named_input(row, spec('images', 'pixels', [8, 8, 1]))
  assert image.shape == (8, 8, 1) and image.dtype == np.float32
  assert image[1, 0, 0] == 8.0
  grid = convert.to_named_input(row, spec('g', 'grid'))
  assert grid.shape == (2, 2)
  assert convert.to_named_input(row, spec('g', 'grid', [4])).shape == (4, )
  ink = convert.to_named_input(row, spec('n', 'ink'))
  assert ink.shape == () and ink.dtype == np.int64
  assert convert.to_named_input(row, spec('t', 'text')) == 'great'
  assert convert.to_named_input(row, spec('b', 'png')) == b'\x89PNG'
  mask = convert.to_named_input(row, spec('m', 'mask'))
  assert mask.dtype == bool and mask.tolist() == [True, False]
  assert convert.to_named_input(row, spec('i', 'maybe')).dtype == np.int32
  # The model's own dtype and shape win where its file gives them.
  as_model = convert.to_named_input(row, spec('p', 'pixels'), (None, 64),
                                    np.float64)
  assert as_model.dtype == np.float64 and as_model.shape == (64, )
  batch = convert.stack([{'t': 'a', 'x': ink}, {'t': 'b', 'x': ink}])
  assert batch['t'].dtype == object and batch['t'].tolist() == ['a', 'b']
  assert batch['x'].shape == (2, )


def test_a_record_that_does_not_fit_names_its_field_and_the_fix():
  good = dict(id=1,
              pixels=[0.0] * 64,
              grid=[[1.0, 2.0], [3.0, 4.0]],
              ink=1,
              text='t',
              png=b'',
              mask=[True],
              maybe=None)
  with pytest.raises(convert.RecordError,
                     match=r"field 'pixels' has 63 values; the model input "
                     r'\(None, 8, 8, 1\) needs 64 per record'):
    convert.to_named_input(beam.Row(**dict(good, pixels=[0.0] * 63)),
                           spec('images', 'pixels', [8, 8, 1]))
  with pytest.raises(convert.RecordError, match="'maybe'.* is null"):
    convert.to_named_input(beam.Row(**good), spec('i', 'maybe'))
  with pytest.raises(convert.RecordError,
                     match='not a rectangular array of numbers'):
    convert.to_named_input(beam.Row(**dict(good, grid=[[1.0], [2.0, 3.0]])),
                           spec('g', 'grid'))
  with pytest.raises(convert.RecordError, match=r"'pixels'.*\[2\] is 'x'"):
    convert.to_named_input(
        beam.Row(**dict(good, pixels=[1.0, 2.0, 'x'] + [0.0] * 61)),
        spec('p', 'pixels'))
  with pytest.raises(convert.RecordError,
                     match=r'has shape \(2, 2\); the model input takes '
                     r'\(None, None, 3\)'):
    convert.to_named_input(beam.Row(**good), spec('g', 'grid'), (None, None, 3))
  with pytest.raises(convert.RecordError, match=r'\[0\] is nan'):
    convert.to_named_input(beam.Row(**dict(good, pixels=[float('nan')] * 64)),
                           spec('p', 'pixels'))


def outputs(*declared):
  return convert.parse_outputs([{'name': n, 'type': t} for n, t in declared])


def test_declared_outputs_take_the_model_outputs_by_name_or_order():
  specs = outputs(('probabilities', 'array<float32>'), ('digit', 'int64'))
  by_name = {
      'digit': np.int64(3),
      'probabilities': np.arange(3, dtype=np.float32),
      'other': 1
  }
  assert convert.output_values(by_name, specs) == {
      'probabilities': [0.0, 1.0, 2.0],
      'digit': 3
  }
  assert convert.output_values((np.ones((1, 2)), np.asarray([7])), specs) == {
      'probabilities': [1.0, 1.0],
      'digit': 7
  }
  regression = outputs(('prediction', 'float64'))
  assert convert.output_values(np.asarray([2.5]), regression) == {
      'prediction': 2.5
  }
  label = outputs(('label', 'str'), ('tokens', 'array<str>'))
  assert convert.output_values(
      {
          'label': b'POSITIVE',
          'tokens': np.asarray(['a', 'b'])
      }, label) == {
          'label': 'POSITIVE',
          'tokens': ['a', 'b']
      }
  nested = outputs(('boxes', 'array<array<float32>>'))
  assert convert.output_values(np.zeros((2, 4)), nested) == {
      'boxes': [[0.0] * 4] * 2
  }


def test_an_output_that_does_not_fit_says_what_it_is_and_what_was_declared():
  specs = outputs(('probabilities', 'array<float32>'), ('digit', 'int64'))
  with pytest.raises(convert.OutputError,
                     match=r"no output\(s\) digit \(its outputs: "
                     'probabilities, logits'):
    convert.output_values({'probabilities': 1, 'logits': 2}, specs)
  with pytest.raises(convert.OutputError,
                     match='returned 3 outputs, in order, and 2 were declared'):
    convert.output_values((1, 2, 3), specs)
  with pytest.raises(convert.OutputError,
                     match="output 'digit' is a float32 scalar .*declared "
                     'INT64'):
    convert.output_values({
        'probabilities': [1.0],
        'digit': np.float32(3.0)
    }, specs)
  with pytest.raises(convert.OutputError,
                     match=r"output 'probabilities' is a float64 array of "
                     r'shape \(2, 3\); it was declared ARRAY<FLOAT> \(1 '
                     'dimension'):
    convert.output_values({
        'probabilities': np.zeros((2, 3)),
        'digit': 1
    }, specs)
  with pytest.raises(convert.OutputError,
                     match="output 'label' .*declared STRING"):
    convert.output_values(np.asarray(0.5), outputs(('label', 'str')))
  with pytest.raises(convert.OutputError,
                     match='has outputs a, b; declare the ones to keep'):
    convert.default_scores({'a': 1, 'b': 2})
  with pytest.raises(ValueError, match="'model_id' is the field"):
    outputs(('model_id', 'str'))


def test_declared_outputs_shape_the_output_row_type():
  fields = [('id', np.int64)]
  specs = outputs(('label', 'str'), ('embedding', 'array<float32>'),
                  ('boxes', 'array<array<float64>>'))
  row_type = convert.declared_output_type(fields, specs)
  assert [name for name, _ in row_type._fields
          ] == ['id', 'label', 'embedding', 'boxes', 'model_id']
  assert dict(
      row_type._fields)['boxes'] == typing.Sequence[typing.Sequence[float]]
  with pytest.raises(ValueError, match=r'already has field\(s\) label'):
    convert.check_output_fields([('label', str)], specs)


def reference(digits_dir, name):
  with open(os.path.join(digits_dir, f'{name}.reference.jsonl')) as f:
    return [json.loads(line) for line in f]


def run_all(handler, batch):
  handler.bind_schema(_row_fields(batch[0]))
  return handler.run_inference(batch, handler.load_model())


def _row_fields(row):
  types = {
      'id': np.int64,
      'label': np.int64,
      'pixels': typing.Sequence[np.float32],
      'grid': typing.Sequence[typing.Sequence[np.float32]],
      'ink': np.int64,
      'features': typing.Sequence[float],
  }
  return [(name, types[name]) for name in row._asdict()]


def digit_rows(n, grid=False, labels=True):
  features, targets = digits.load_digits()
  out = []
  for i in range(n):
    values = dict(id=i, label=int(targets[i])) if labels else dict(id=i)
    if grid:
      values['grid'] = features[i].reshape(8, 8).tolist()
    else:
      values['pixels'] = features[i].tolist()
      values['ink'] = int(shaped.ink(features[i:i + 1])[0])
    out.append(beam.Row(**values))
  return out


def assert_matches(results, expected, names):
  assert not [
      r.inference for r in results if isinstance(r.inference, handlers.Failure)
  ]
  for result, want in zip(results, expected):
    for name in names:
      np.testing.assert_allclose(result.inference[name],
                                 want[name],
                                 rtol=1e-5,
                                 atol=1e-5)


def test_a_torchscript_cnn_takes_an_image_shape_and_returns_two_outputs(
    digits_dir):
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir, shaped.CNN),
                                    feature_field='features',
                                    inputs=[{
                                        'name': 'images',
                                        'field': 'grid',
                                        'shape': [8, 8, 1]
                                    }],
                                    outputs=[{
                                        'name': 'probabilities',
                                        'type': 'array<float32>'
                                    }, {
                                        'name': 'embedding',
                                        'type': 'array<float32>'
                                    }])
  results = run_all(handler, digit_rows(40, grid=True))
  assert_matches(results, reference(digits_dir, shaped.CNN),
                 ['probabilities', 'embedding'])
  assert len(results[0].inference['embedding']) == 16


def test_a_savedmodel_takes_two_named_inputs_and_gives_two_named_outputs(
    digits_dir):
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir, shaped.TWO_INPUT),
                                    feature_field='features',
                                    inputs=[{
                                        'name': 'pixels',
                                        'field': 'pixels'
                                    }, {
                                        'name': 'ink',
                                        'field': 'ink'
                                    }],
                                    outputs=[{
                                        'name': 'digit',
                                        'type': 'int64'
                                    }, {
                                        'name': 'probabilities',
                                        'type': 'array<float32>'
                                    }])
  results = run_all(handler, digit_rows(40))
  assert_matches(results, reference(digits_dir, shaped.TWO_INPUT),
                 ['probabilities', 'digit'])
  assert all(isinstance(r.inference['digit'], int) for r in results)


def test_inputs_the_model_does_not_have_fail_each_record_with_its_names(
    digits_dir):
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir, shaped.TWO_INPUT),
                                    feature_field='features',
                                    inputs=[{
                                        'name': 'pixels',
                                        'field': 'pixels'
                                    }],
                                    outputs=[{
                                        'name': 'digit',
                                        'type': 'int64'
                                    }])
  results = run_all(handler, digit_rows(3))
  messages = {r.inference.message for r in results}
  assert len(messages) == 1
  assert 'has inputs ink, pixels; withInput names pixels.' in messages.pop()


def test_an_onnx_model_gives_its_outputs_by_name(digits_dir):
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir,
                                                 'digits-sklearn.onnx'),
                                    feature_field='pixels',
                                    outputs=[{
                                        'name': 'label',
                                        'type': 'int64'
                                    }, {
                                        'name': 'probabilities',
                                        'type': 'array<float32>'
                                    }])
  results = run_all(handler, digit_rows(40, labels=False))
  with open(os.path.join(digits_dir, 'digits-sklearn.onnx.reference.csv')) as f:
    import csv
    expected = [int(r['predicted_class']) for r in csv.DictReader(f)][:40]
  assert [r.inference['label'] for r in results] == expected


def test_an_xgboost_regressor_gives_one_number(digits_dir):
  import csv
  with open(os.path.join(digits_dir, shaped.DIABETES)) as f:
    batch = [
        beam.Row(id=int(r['id']),
                 features=[float(r[f'f{i}']) for i in range(10)])
        for r in csv.DictReader(f)
    ][:50]
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir, shaped.XGB),
                                    feature_field='features',
                                    outputs=[{
                                        'name': 'prediction',
                                        'type': 'float64'
                                    }])
  results = run_all(handler, batch)
  assert_matches(results, reference(digits_dir, shaped.XGB), ['prediction'])


BEAM_SKLEARN = 'xinfer.examples.handlers:beam_sklearn'


def test_a_beam_model_handler_runs_with_dead_letters_and_model_ids(digits_dir):
  handler = handlers.create_handler('beam_model_handler',
                                    BEAM_SKLEARN,
                                    feature_field='pixels',
                                    model_params={
                                        'model_uri': os.path.join(
                                            digits_dir, 'digits-sklearn.joblib')
                                    },
                                    outputs=[{
                                        'name': 'digit',
                                        'type': 'int64'
                                    }])
  batch = digit_rows(30)
  batch[4] = beam.Row(**dict(batch[4]._asdict(), pixels=[1.0] * 3))
  results = run_all(handler, batch)
  import csv
  with open(os.path.join(digits_dir,
                         'digits-sklearn.joblib.reference.csv')) as f:
    expected = [int(r['predicted_class']) for r in csv.DictReader(f)][:30]
  got = [
      r.inference
      if isinstance(r.inference, handlers.Failure) else r.inference['digit']
      for r in results
  ]
  assert got[:4] + got[5:] == expected[:4] + expected[5:]
  assert got[4].stage == 'inference' and '64 features' in got[4].message
  assert {r.model_id for r in results} == {BEAM_SKLEARN}


def test_a_model_handler_from_a_module_not_allowed_is_refused_unimported():
  with pytest.raises(PermissionError,
                     match="model handler 'os:system' is in module 'os'"):
    handlers.create_handler('beam_model_handler',
                            'os:system',
                            feature_field='pixels')


def test_a_factory_that_makes_no_model_handler_fails_each_record(digits_dir):
  modules.configure(['collections'])
  handler = handlers.create_handler('beam_model_handler',
                                    'collections:OrderedDict',
                                    feature_field='pixels')
  results = run_all(handler, digit_rows(2))
  assert 'must make an apache_beam.ml.inference.base.ModelHandler' in (
      results[0].inference.message)


def test_row_inference_builds_the_declared_output_row_in_a_pipeline(digits_dir):
  from apache_beam.testing.util import assert_that, equal_to
  rows = digit_rows(20)
  expected = reference(digits_dir, shaped.TWO_INPUT)[:20]
  with beam.Pipeline() as p:
    predictions = (p | beam.Create(rows).with_output_types(
        beam.typehints.row_type.RowTypeConstraint.from_fields(
            _row_fields(rows[0])))
                   | transforms.RowInference(model_uri=os.path.join(
                       digits_dir, shaped.TWO_INPUT),
                                             inputs=json.dumps([{
                                                 'name': 'pixels',
                                                 'field': 'pixels'
                                             }, {
                                                 'name': 'ink',
                                                 'field': 'ink'
                                             }]),
                                             outputs=json.dumps([{
                                                 'name': 'digit',
                                                 'type': 'int64'
                                             }])))
    assert_that(
        predictions | beam.Map(lambda r: (r.id, r.digit, r.model_id)),
        equal_to([(e['id'], e['digit'], shaped.TWO_INPUT) for e in expected]))


def vader_rows(digits_dir, n):
  import csv
  with open(os.path.join(digits_dir, shaped.VADER), encoding='utf-8') as f:
    return [
        beam.Row(id=int(r['id']), phrase=r['phrase']) for r in csv.DictReader(f)
    ][:n]


TEXT_FIELDS = [('id', np.int64), ('phrase', str)]


def test_a_hugging_face_text_classifier_gives_a_label_and_its_probability(
    digits_dir):
  path = os.path.join(digits_dir, shaped.TEXT)
  assert handlers.detect_framework(path) == 'huggingface'
  handler = handlers.create_handler(None,
                                    path,
                                    feature_field='features',
                                    inputs=[{
                                        'name': 'text',
                                        'field': 'phrase'
                                    }],
                                    outputs=[{
                                        'name': 'label',
                                        'type': 'str'
                                    }, {
                                        'name': 'score',
                                        'type': 'float32'
                                    }, {
                                        'name': 'scores',
                                        'type': 'array<float32>'
                                    }])
  handler.bind_schema(TEXT_FIELDS)
  batch = vader_rows(digits_dir, 64)
  results = handler.run_inference(batch, handler.load_model())
  expected = reference(digits_dir, shaped.TEXT)
  assert [r.inference['label']
          for r in results] == [e['label'] for e in expected[:64]]
  assert_matches(results, expected, ['score', 'scores'])
  # Without declared outputs, the label probabilities are the scores.
  plain = handlers.create_handler('huggingface',
                                  path,
                                  feature_field='features',
                                  inputs=[{
                                      'name': 'text',
                                      'field': 'phrase'
                                  }])
  plain.bind_schema(TEXT_FIELDS)
  scores = plain.run_inference(batch[:5], plain.load_model())
  np.testing.assert_allclose(np.stack([r.inference for r in scores]),
                             [e['scores'] for e in expected[:5]],
                             rtol=1e-5)


def test_a_hugging_face_feature_extractor_gives_an_embedding(digits_dir):
  handler = handlers.create_handler('huggingface',
                                    os.path.join(digits_dir, shaped.TEXT),
                                    feature_field='features',
                                    task='feature-extraction',
                                    inputs=[{
                                        'name': 'text',
                                        'field': 'phrase'
                                    }],
                                    outputs=[{
                                        'name': 'embedding',
                                        'type': 'array<float32>'
                                    }])
  handler.bind_schema(TEXT_FIELDS)
  results = handler.run_inference(vader_rows(digits_dir, 3),
                                  handler.load_model())
  assert [len(r.inference['embedding']) for r in results] == [48] * 3
  with pytest.raises(ValueError, match="task 'translation' is not one of"):
    handlers.create_handler('huggingface',
                            'x',
                            feature_field='f',
                            task='translation')


def test_one_worker_serves_tensorflow_then_hugging_face(digits_dir):
  """Loading transformers after TensorFlow aborted the process (Triton's and
  TensorFlow's LLVMs); a fresh process shows it, whatever else pytest loaded."""
  import subprocess
  import sys
  code = (
      'import tensorflow, apache_beam as beam\n'
      'from xinfer import handlers\n'
      f'h = handlers.create_handler(None, {os.path.join(digits_dir, shaped.TEXT)!r}, '
      "feature_field='f', inputs=[{'name': 'text', 'field': 'phrase'}])\n"
      "h.bind_schema([('phrase', str)])\n"
      "r = h.run_inference([beam.Row(phrase='great')], h.load_model())\n"
      'print(len(r[0].inference))\n')
  done = subprocess.run([sys.executable, '-c', code],
                        capture_output=True,
                        text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == '2'


def test_png_bytes_decoded_in_python_reach_the_cnn_as_images(digits_dir):
  import io
  from PIL import Image
  from xinfer.examples import hooks
  features, _ = digits.load_digits()
  batch = []
  for i in range(20):
    image = Image.fromarray(features[i].reshape(8, 8).astype(np.uint8), 'L')
    encoded = io.BytesIO()
    image.save(encoded, format='PNG')
    batch.append(beam.Row(id=i, png=encoded.getvalue()))
  assert hooks.decode_png(batch[0]).shape == (8, 8, 1)
  handler = handlers.create_handler(
      None,
      os.path.join(digits_dir, shaped.CNN),
      feature_field='png',
      preprocess='xinfer.examples.hooks:decode_png',
      outputs=[{
          'name': 'probabilities',
          'type': 'array<float32>'
      }, {
          'name': 'embedding',
          'type': 'array<float32>'
      }])
  handler.bind_schema([('id', np.int64), ('png', bytes)])
  results = handler.run_inference(batch, handler.load_model())
  assert_matches(results, reference(digits_dir, shaped.CNN),
                 ['probabilities', 'embedding'])


@pytest.mark.parametrize(
    'name',
    ['digits-torch.pt', 'digits-mlp', 'digits-sklearn.onnx', shaped.XGB])
def test_the_device_is_chosen_per_model_and_cpu_runs_here(digits_dir, name):
  path = os.path.join(digits_dir, name)
  width = 10 if name == shaped.XGB else 64
  batch = [beam.Row(id=i, features=[1.0] * width) for i in range(3)]
  on_cpu = handlers.create_handler(None,
                                   path,
                                   feature_field='features',
                                   device='cpu')
  assert not any(
      isinstance(r.inference, handlers.Failure)
      for r in on_cpu.run_inference(batch, on_cpu.load_model()))
  # This machine has no GPU: asking for one fails each record, saying so.
  on_gpu = handlers.create_handler(None,
                                   path,
                                   feature_field='features',
                                   device='cuda:0')
  failures = on_gpu.run_inference(batch, on_gpu.load_model())
  assert all("device 'cuda:0' was asked for" in r.inference.message
             for r in failures), failures[0].inference


def test_a_device_the_framework_cannot_use_is_refused(digits_dir):
  with pytest.raises(ValueError, match='runs on the CPU only'):
    handlers.create_handler(None,
                            os.path.join(digits_dir, 'digits-sklearn.joblib'),
                            feature_field='features',
                            device='cuda')
  with pytest.raises(ValueError, match="device 'gpu0' is not cpu, cuda"):
    handlers.create_handler(None,
                            os.path.join(digits_dir, 'digits-torch.pt'),
                            feature_field='features',
                            device='gpu0')


def test_text_for_a_pytorch_model_fails_the_record_with_the_fix(digits_dir):
  handler = handlers.create_handler(None,
                                    os.path.join(digits_dir, shaped.CNN),
                                    feature_field='features',
                                    inputs=[{
                                        'name': 'images',
                                        'field': 'phrase'
                                    }])
  handler.bind_schema(TEXT_FIELDS)
  (result, ) = handler.run_inference([beam.Row(id=1, phrase='great')],
                                     handler.load_model())
  assert result.inference.stage == 'inference'
  assert 'takes numeric tensors; this input holds text' in (
      result.inference.message)
