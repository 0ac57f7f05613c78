"""Each framework's named inputs, typed outputs, strings, bytes and N-d shapes
(README "Models and frameworks", key [C]).

Where set-up trains no model with the capability, a small one is built here
with the framework itself (in tmp_path, seeded, offline), and xinfer's outputs
are checked against what the framework computes in plain Python on the same
inputs; where the framework cannot take the input, the refusal is checked."""

import csv
import io
import json
import os
import typing

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult

import xinfer_digits as digits
from xinfer import convert
from xinfer import handlers
from xinfer import modules
from xinfer_digits import shaped

from handler_fakes import restore_allowlist  # pylint: disable=unused-import

SEED = 20261215
RECORDS = 24
FIELDS = [('id', np.int64), ('pixels', typing.Sequence[np.float32]),
          ('grid', typing.Sequence[typing.Sequence[np.float32]]),
          ('ink', np.int64), ('png', bytes), ('phrase', str), ('utf8', bytes)]


def png_of(pixels: np.ndarray) -> bytes:
  from PIL import Image
  encoded = io.BytesIO()
  Image.fromarray(pixels.reshape(8, 8).astype(np.uint8), 'L').save(encoded,
                                                                   format='PNG')
  return encoded.getvalue()


@pytest.fixture(scope='module')
def pixels():
  features, _ = digits.load_digits()
  return features[:RECORDS]


@pytest.fixture(scope='module')
def phrases(digits_dir):
  with open(os.path.join(digits_dir, shaped.VADER), encoding='utf-8') as f:
    return [r['phrase'] for r in csv.DictReader(f)][:RECORDS]


@pytest.fixture(scope='module')
def records(pixels, phrases):
  """One record per digit: its pixels flat and as an 8x8 grid, its ink, its
  PNG, and a phrase of the VADER lexicon as a STRING and as UTF-8 BYTES."""
  return [
      beam.Row(id=i,
               pixels=pixels[i].tolist(),
               grid=pixels[i].reshape(8, 8).tolist(),
               ink=int(shaped.ink(pixels[i:i + 1])[0]),
               png=png_of(pixels[i]),
               phrase=phrases[i],
               utf8=phrases[i].encode('utf-8')) for i in range(RECORDS)
  ]


def run(handler, batch, fields=FIELDS):
  """Each record's declared outputs (or scores); fails on any failure."""
  handler.bind_schema(fields)
  results = handler.run_inference(batch, handler.load_model())
  failures = [
      r.inference for r in results if isinstance(r.inference, handlers.Failure)
  ]
  assert not failures, failures[0]
  assert len(results) == len(batch)
  return [r.inference for r in results]


def failures_of(handler, batch, fields=FIELDS):
  handler.bind_schema(fields)
  results = handler.run_inference(batch, handler.load_model())
  assert all(isinstance(r.inference, handlers.Failure) for r in results)
  return [r.inference for r in results]


def create(path,
           inputs=(),
           outputs=(),
           framework=None,
           feature_field='pixels',
           **kwargs):
  """A handler; ``inputs`` as (name, field[, shape]), ``outputs`` as (name,
  type)."""
  return handlers.create_handler(
      framework,
      str(path),
      feature_field=feature_field,
      inputs=[dict(zip(('name', 'field', 'shape'), i)) for i in inputs],
      outputs=[{
          'name': name,
          'type': type_
      } for name, type_ in outputs],
      **kwargs)


def column(results, name):
  return np.asarray([r[name] for r in results])


# --- TensorFlow SavedModel -----------------------------------------------------


def save_text_and_png(path):
  """A SavedModel taking two tf.string inputs: ``text`` (its length in
  characters and upper case) and ``png`` (decoded into its 64 pixels)."""
  import tensorflow as tf

  class TextAndPng(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name='text'),
        tf.TensorSpec([None], tf.string, name='png')
    ])
    def serve(self, text, png):
      images = tf.map_fn(
          lambda b: tf.ensure_shape(tf.io.decode_png(b, channels=1), [8, 8, 1]),
          png,
          fn_output_signature=tf.TensorSpec([8, 8, 1], tf.uint8))
      return {
          'length': tf.strings.length(text, unit='UTF8_CHAR'),
          'upper': tf.strings.upper(text),
          'decoded': tf.reshape(tf.cast(images, tf.float32), [-1, 64]),
      }

  module = TextAndPng()
  tf.saved_model.save(module,
                      path,
                      signatures={'serving_default': module.serve})


def test_a_savedmodel_takes_a_string_and_png_bytes_as_tf_strings(
    tmp_path, records, pixels):
  import tensorflow as tf
  path = str(tmp_path / 'text-and-png')
  save_text_and_png(path)
  handler = create(path, [('text', 'phrase'), ('png', 'png')],
                   [('length', 'int32'), ('upper', 'str'),
                    ('decoded', 'array<float32>')])
  got = run(handler, records)
  signature = tf.saved_model.load(path).signatures['serving_default']
  want = signature(text=tf.constant([r.phrase for r in records]),
                   png=tf.constant([r.png for r in records]))
  assert column(got, 'length').tolist() == want['length'].numpy().tolist()
  assert [r['upper']
          for r in got] == [u.decode('utf-8') for u in want['upper'].numpy()]
  assert all(isinstance(r['upper'], str) for r in got)
  np.testing.assert_array_equal(column(got, 'decoded'), want['decoded'].numpy())
  # The PNG bytes reached the model whole: it decoded each digit's pixels.
  np.testing.assert_array_equal(column(got, 'decoded'), pixels)
  # UTF-8 BYTES feed a tf.string input as well as a STRING does.
  as_bytes = create(path, [('text', 'utf8'), ('png', 'png')],
                    [('upper', 'str')])
  assert [r['upper']
          for r in run(as_bytes, records)] == [r['upper'] for r in got]


def save_images(path):
  """A SavedModel on [N, 8, 8, 1] images: a fixed 3x3 convolution, pooled to
  a 4x4 map (an N-d output) and summed."""
  import tensorflow as tf
  kernel = tf.constant(
      np.random.default_rng(SEED).normal(size=(3, 3, 1, 2)), tf.float32)

  class Images(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None, 8, 8, 1], tf.float32, name='images')
    ])
    def serve(self, images):
      maps = tf.nn.relu(tf.nn.conv2d(images / 16.0, kernel, 1, 'SAME'))
      return {
          'pooled': tf.nn.avg_pool2d(maps, 2, 2, 'VALID')[..., 0],
          'total': tf.reduce_sum(maps, axis=[1, 2, 3]),
      }

  module = Images()
  tf.saved_model.save(module,
                      path,
                      signatures={'serving_default': module.serve})


def test_a_savedmodel_takes_an_n_d_input_shaped_by_the_field_or_the_model(
    tmp_path, records, pixels):
  import tensorflow as tf
  path = str(tmp_path / 'images')
  save_images(path)
  outputs = [('pooled', 'array<array<float32>>'), ('total', 'float32')]
  signature = tf.saved_model.load(path).signatures['serving_default']
  want = signature(images=tf.constant(pixels.reshape(-1, 8, 8, 1)))
  assert want['pooled'].shape == (RECORDS, 4, 4)
  for handler in (
      # An 8x8 grid given the 8x8x1 shape, the flat pixels shaped by the
      # model's signature, and the feature field of the one-input form.
      create(path, [('images', 'grid', [8, 8, 1])], outputs),
      create(path, [('images', 'pixels')], outputs),
      create(path, outputs=outputs)):
    got = run(handler, records)
    np.testing.assert_allclose(column(got, 'pooled'),
                               want['pooled'].numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(column(got, 'total'),
                               want['total'].numpy(),
                               rtol=1e-6)


# --- Keras .keras ----------------------------------------------------------------


def save_keras_two_inputs(path):
  import keras
  keras.utils.set_random_seed(SEED)
  pixels = keras.Input(shape=(64, ), name='pixels')
  ink = keras.Input(shape=(1, ), name='ink')
  joined = keras.layers.Concatenate()([
      keras.layers.Rescaling(1 / 16)(pixels),
      keras.layers.Rescaling(1 / 64)(ink)
  ])
  hidden = keras.layers.Dense(8, activation='relu')(joined)
  model = keras.Model(
      [pixels, ink], {
          'probabilities': keras.layers.Dense(10, activation='softmax')(hidden),
          'score': keras.layers.Dense(1)(hidden),
      })
  model.save(path)


def test_a_keras_file_takes_named_inputs_and_gives_named_outputs(
    tmp_path, records, pixels):
  import keras
  path = str(tmp_path / 'two-inputs.keras')
  save_keras_two_inputs(path)
  handler = create(path, [('pixels', 'pixels'), ('ink', 'ink')],
                   [('probabilities', 'array<float32>'), ('score', 'float64')])
  got = run(handler, records)
  ink = np.asarray([r.ink for r in records], np.float32).reshape(-1, 1)
  want = keras.models.load_model(path)({'pixels': pixels, 'ink': ink})
  np.testing.assert_allclose(column(got, 'probabilities'),
                             np.asarray(want['probabilities']),
                             rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(column(got, 'score'),
                             np.asarray(want['score']).reshape(-1),
                             rtol=1e-5,
                             atol=1e-7)
  assert all(isinstance(r['score'], float) for r in got)


def save_keras_lookup(path, vocabulary):
  import keras
  text = keras.Input(shape=(), dtype='string', name='text')
  index = keras.layers.StringLookup(vocabulary=vocabulary)(text)
  keras.Model(text, index).save(path)


def test_a_keras_file_takes_a_string_and_utf8_bytes(tmp_path, records, phrases):
  import keras
  import tensorflow as tf
  path = str(tmp_path / 'lookup.keras')
  # Half the phrases are in the vocabulary, the rest are out of it (index 0).
  save_keras_lookup(path, phrases[::2])
  want = np.asarray(keras.models.load_model(path)(tf.constant(phrases)))
  assert sorted(set(want.tolist()))[:2] == [0, 1]
  for field in ('phrase', 'utf8'):
    handler = create(path, [('text', field)], [('index', 'int64')])
    assert column(run(handler, records), 'index').tolist() == want.tolist()


def save_keras_images(path):
  import keras
  keras.utils.set_random_seed(SEED)
  images = keras.Input(shape=(8, 8, 1), name='images')
  maps = keras.layers.Conv2D(2, 3, padding='same', activation='relu')(
      keras.layers.Rescaling(1 / 16)(images))
  probabilities = keras.layers.Dense(10, activation='softmax')(
      keras.layers.GlobalAveragePooling2D()(maps))
  keras.Model(images, probabilities).save(path)


def test_a_keras_file_takes_an_n_d_input(tmp_path, records, pixels):
  import keras
  path = str(tmp_path / 'images.keras')
  save_keras_images(path)
  want = np.asarray(keras.models.load_model(path)(pixels.reshape(-1, 8, 8, 1)))
  named = create(path, [('images', 'grid', [8, 8, 1])],
                 [('probabilities', 'array<float32>')])
  np.testing.assert_allclose(column(run(named, records), 'probabilities'),
                             want,
                             rtol=1e-5,
                             atol=1e-7)
  # The one-input form: the flat pixels take the model's 8x8x1 shape.
  flat = create(path)
  np.testing.assert_allclose(np.stack(run(flat, records)),
                             want,
                             rtol=1e-5,
                             atol=1e-7)


# --- PyTorch -----------------------------------------------------------------


def save_torch_two_inputs(path):
  """TorchScript taking ``pixels`` and ``ink`` positionally, returning a dict."""
  import torch
  from torch import nn

  class TwoInputs(nn.Module):
    def __init__(self):
      super().__init__()
      self.linear = nn.Linear(65, 10)

    def forward(self, pixels: torch.Tensor,
                ink: torch.Tensor) -> typing.Dict[str, torch.Tensor]:
      x = torch.cat([pixels / 16.0, ink.unsqueeze(1).float() / 64.0], dim=1)
      probabilities = torch.softmax(self.linear(x), dim=1)
      return {
          'probabilities': probabilities,
          'digit': probabilities.argmax(dim=1)
      }

  torch.manual_seed(SEED)
  torch.jit.save(torch.jit.script(TwoInputs().eval()), path)


def test_a_torchscript_module_takes_several_named_inputs_in_order(
    tmp_path, records, pixels):
  import torch
  path = str(tmp_path / 'two-inputs.pt')
  save_torch_two_inputs(path)
  handler = create(path, [('pixels', 'pixels'), ('ink', 'ink')],
                   [('digit', 'int64'), ('probabilities', 'array<float32>')])
  got = run(handler, records)
  with torch.no_grad():
    want = torch.jit.load(path)(torch.from_numpy(pixels),
                                torch.from_numpy(shaped.ink(pixels)))
  np.testing.assert_allclose(column(got, 'probabilities'),
                             want['probabilities'].numpy(),
                             rtol=1e-6)
  assert column(got, 'digit').tolist() == want['digit'].tolist()


# --- scikit-learn and XGBoost: one feature array per record ----------------------


def phrase_of(row):
  """A preprocess hook: the record's phrase, as a text pipeline takes it."""
  return row.phrase


def test_a_scikit_learn_classifier_gives_its_probabilities_as_declared(
    digits_dir, records):
  handler = create(os.path.join(digits_dir, 'digits-sklearn.joblib'),
                   outputs=[('probabilities', 'array<float32>')])
  with open(os.path.join(digits_dir,
                         'digits-sklearn.joblib.reference.csv')) as f:
    want = [[float(r[f's{i}']) for i in range(10)]
            for r in csv.DictReader(f)][:RECORDS]
  np.testing.assert_allclose(column(run(handler, records), 'probabilities'),
                             want,
                             rtol=1e-5,
                             atol=1e-7)


def test_a_scikit_learn_text_pipeline_takes_text_from_a_hook(
    tmp_path, digits_dir, records, phrases):
  import joblib
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  with open(os.path.join(digits_dir, shaped.VADER), encoding='utf-8') as f:
    lexicon = list(csv.DictReader(f))[::4]
  model = make_pipeline(TfidfVectorizer(analyzer='char_wb', ngram_range=(2, 3)),
                        LogisticRegression(max_iter=500))
  model.fit([r['phrase'] for r in lexicon], [r['label'] for r in lexicon])
  path = str(tmp_path / 'vader-tfidf.joblib')
  joblib.dump(model, path)
  modules.configure([__name__])
  handler = create(path,
                   outputs=[('probabilities', 'array<float32>')],
                   preprocess=f'{__name__}:phrase_of')
  np.testing.assert_allclose(column(run(handler, records), 'probabilities'),
                             joblib.load(path).predict_proba(phrases),
                             rtol=1e-5,
                             atol=1e-7)


@pytest.fixture(scope='module')
def xgboost_digits(tmp_path_factory):
  """A small XGBoost classifier on the digits (set-up's XGBoost model takes
  the diabetes data)."""
  import xgboost
  features, labels = digits.load_digits()
  model = xgboost.XGBClassifier(n_estimators=4,
                                max_depth=2,
                                n_jobs=1,
                                random_state=SEED)
  model.fit(features, labels)
  path = str(tmp_path_factory.mktemp('xgboost') / 'digits.xgb.json')
  model.save_model(path)
  return path


@pytest.mark.parametrize('model', ['sklearn', 'onnx', 'xgboost'])
def test_png_bytes_decoded_by_a_hook_reach_a_model_of_numbers(
    digits_dir, xgboost_digits, records, pixels, model):
  path = {
      'sklearn': os.path.join(digits_dir, 'digits-sklearn.joblib'),
      'onnx': os.path.join(digits_dir, 'digits-sklearn.onnx'),
      'xgboost': xgboost_digits,
  }[model]
  if model == 'xgboost':
    import xgboost
    booster = xgboost.Booster()
    booster.load_model(path)
    want = booster.inplace_predict(pixels)
  else:
    want = digits.reference_scores(path, pixels)
  handler = create(path,
                   feature_field='png',
                   preprocess='xinfer.examples.hooks:decode_png')
  np.testing.assert_allclose(np.stack(run(handler, records)),
                             want,
                             rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize('model', ['sklearn', 'xgboost'])
def test_scikit_learn_and_xgboost_take_one_feature_array_of_numbers(
    digits_dir, records, model):
  path = os.path.join(
      digits_dir, 'digits-sklearn.joblib' if model == 'sklearn' else shaped.XGB)
  # Named inputs, a STRING, BYTES or an 8x8 grid through withInput: refused.
  for inputs in ([('pixels', 'pixels'), ('ink', 'ink')], [('text', 'phrase')],
                 [('png', 'png')], [('images', 'grid')]):
    failure = failures_of(create(path, inputs), records[:2])[0]
    assert failure.stage == 'inference'
    assert 'takes one input (a feature array)' in failure.message
    assert 'Use withFeatureField' in failure.message
  # As the feature field, text and N-d arrays are refused at construction.
  for field in ('phrase', 'png', 'grid'):
    with pytest.raises(TypeError,
                       match=f"field '{field}' has type .*; the model input "
                       'must be an array of numbers'):
      convert.check_feature_field(FIELDS, field)


# --- ONNX --------------------------------------------------------------------


def save_onnx(path, nodes, inputs, outputs, initializers=(), ml=False):
  import onnx
  from onnx import helper
  from onnx import numpy_helper
  graph = helper.make_graph(
      nodes, 'xinfer_test', [helper.make_tensor_value_info(*i) for i in inputs],
      [helper.make_tensor_value_info(*o) for o in outputs],
      [numpy_helper.from_array(value, name) for name, value in initializers])
  opsets = [helper.make_opsetid('', 17)]
  if ml:
    opsets.append(helper.make_opsetid('ai.onnx.ml', 3))
  model = helper.make_model(graph, opset_imports=opsets)
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, path)


def plain_onnx(path, feed):
  import onnxruntime
  session = onnxruntime.InferenceSession(path,
                                         providers=['CPUExecutionProvider'])
  names = [o.name for o in session.get_outputs()]
  return dict(zip(names, session.run(None, feed)))


def test_an_onnx_model_takes_several_inputs_by_name(tmp_path, records, pixels):
  from onnx import TensorProto
  from onnx import helper
  path = str(tmp_path / 'two-inputs.onnx')
  weights = np.random.default_rng(SEED).normal(size=(65, 10)) * 0.1
  save_onnx(path, [
      helper.make_node('Cast', ['ink'], ['ink_float'], to=TensorProto.FLOAT),
      helper.make_node('Unsqueeze', ['ink_float', 'axis'], ['ink_column']),
      helper.make_node('Div', ['pixels', 'scale'], ['scaled']),
      helper.make_node('Concat', ['scaled', 'ink_column'], ['x'], axis=1),
      helper.make_node('MatMul', ['x', 'weights'], ['logits']),
      helper.make_node('Softmax', ['logits'], ['probabilities'], axis=1),
      helper.make_node('ArgMax', ['logits'], ['digit'], axis=1, keepdims=0),
  ], [('pixels', TensorProto.FLOAT, ['N', 64]),
      ('ink', TensorProto.INT64, ['N'])],
            [('probabilities', TensorProto.FLOAT, ['N', 10]),
             ('digit', TensorProto.INT64, ['N'])],
            [('weights', weights.astype(np.float32)),
             ('axis', np.asarray([1], np.int64)),
             ('scale', np.asarray(16.0, np.float32))])
  # Declared in another order than the graph's: inputs and outputs go by name.
  handler = create(path, [('ink', 'ink'), ('pixels', 'pixels')],
                   [('digit', 'int64'), ('probabilities', 'array<float32>')])
  got = run(handler, records)
  want = plain_onnx(path, {'pixels': pixels, 'ink': shaped.ink(pixels)})
  np.testing.assert_allclose(column(got, 'probabilities'),
                             want['probabilities'],
                             rtol=1e-6)
  assert column(got, 'digit').tolist() == want['digit'].tolist()
  assert len(set(want['digit'].tolist())) > 1


def test_an_onnx_model_takes_strings_and_refuses_bytes(tmp_path, records,
                                                       phrases, digits_dir):
  from onnx import TensorProto
  from onnx import helper
  with open(os.path.join(digits_dir, shaped.VADER), encoding='utf-8') as f:
    labels = [r['label'] for r in csv.DictReader(f)][:RECORDS]
  path = str(tmp_path / 'strings.onnx')
  # Lookup tables of half the phrases: their VADER label and their position.
  save_onnx(path, [
      helper.make_node('LabelEncoder', ['text'], ['label'],
                       domain='ai.onnx.ml',
                       keys_strings=phrases[::2],
                       values_strings=labels[::2],
                       default_string='UNKNOWN'),
      helper.make_node('LabelEncoder', ['text'], ['index'],
                       domain='ai.onnx.ml',
                       keys_strings=phrases[::2],
                       values_int64s=list(range(1,
                                                len(phrases[::2]) + 1)),
                       default_int64=0),
  ], [('text', TensorProto.STRING, ['N'])],
            [('label', TensorProto.STRING, ['N']),
             ('index', TensorProto.INT64, ['N'])],
            ml=True)
  want = plain_onnx(path, {'text': np.asarray(phrases, dtype=object)})
  assert {'UNKNOWN', 'POSITIVE', 'NEGATIVE'} <= set(want['label'].tolist())
  handler = create(path, [('text', 'phrase')], [('label', 'str'),
                                                ('index', 'int64')])
  got = run(handler, records)
  assert [r['label'] for r in got] == want['label'].tolist()
  assert column(got, 'index').tolist() == want['index'].tolist()
  # ONNX Runtime would read bytes as their repr ("b'...'"): refused instead.
  failures = failures_of(create(path, [('text', 'utf8')], [('index', 'int64')]),
                         records[:2])
  assert {f.stage for f in failures} == {'inference'}
  assert "takes text as 'text'; this input holds bytes" in failures[0].message


def test_an_onnx_model_takes_an_n_d_input(tmp_path, records, pixels):
  from onnx import TensorProto
  from onnx import helper
  path = str(tmp_path / 'images.onnx')
  weights = np.random.default_rng(SEED).normal(size=(64, 10)) * 0.05
  save_onnx(path, [
      helper.make_node('Reshape', ['images', 'flat'], ['x']),
      helper.make_node('MatMul', ['x', 'weights'], ['logits']),
      helper.make_node('Softmax', ['logits'], ['probabilities'], axis=1),
  ], [('images', TensorProto.FLOAT, ['N', 8, 8, 1])],
            [('probabilities', TensorProto.FLOAT, ['N', 10])],
            [('weights', weights.astype(np.float32)),
             ('flat', np.asarray([-1, 64], np.int64))])
  want = plain_onnx(path,
                    {'images': pixels.reshape(-1, 8, 8, 1)})['probabilities']
  outputs = [('probabilities', 'array<float32>')]
  grid = create(path, [('images', 'grid', [8, 8, 1])], outputs)
  flat = create(path, [('images', 'pixels')], outputs)
  for handler in (grid, flat):
    np.testing.assert_allclose(column(run(handler, records), 'probabilities'),
                               want,
                               rtol=1e-6)
  # The one-input form: the flat pixels take the graph's 8x8x1 shape.
  np.testing.assert_allclose(np.stack(run(create(path), records)),
                             want,
                             rtol=1e-6)


# --- Hugging Face ------------------------------------------------------------


def test_hugging_face_takes_utf8_bytes_as_text(digits_dir, records):
  handler = create(os.path.join(digits_dir, shaped.TEXT), [('text', 'utf8')],
                   [('label', 'str'), ('scores', 'array<float32>')])
  got = run(handler, records)
  with open(os.path.join(digits_dir, f'{shaped.TEXT}.reference.jsonl')) as f:
    want = [json.loads(line) for line in f][:RECORDS]
  assert [r['label'] for r in got] == [w['label'] for w in want]
  np.testing.assert_allclose(column(got, 'scores'), [w['scores'] for w in want],
                             rtol=1e-5)


def test_hugging_face_refuses_two_inputs_and_arrays(digits_dir, records):
  path = os.path.join(digits_dir, shaped.TEXT)
  with pytest.raises(ValueError,
                     match='a Hugging Face pipeline takes one text per record; '
                     'withInput names text, pair'):
    create(path, [('text', 'phrase'), ('pair', 'phrase')])
  for field in ('pixels', 'grid'):
    failures = failures_of(create(path, [('text', field)]), records[:2])
    assert {f.stage for f in failures} == {'inference'}
    assert ('a Hugging Face pipeline takes text; got ndarray. Name a STRING '
            'field with withInput.') in failures[0].message


# --- A Beam ModelHandler of your own -------------------------------------------


class EchoHandler(ModelHandler):
  """A Beam ModelHandler that keeps each example it is given and answers
  from it: what ``Model.ofHandler`` hands a handler, seen from inside."""
  seen = []

  def load_model(self):
    return None

  def run_inference(self, batch, model, inference_args=None):
    EchoHandler.seen.extend(batch)
    return [
        PredictionResult(
            example, {
                'upper': example['text'].upper(),
                'size': len(example['png']),
                'total': float(example['images'].sum()),
            }) for example in batch
    ]


def test_a_beam_model_handler_gets_named_inputs_as_a_dict_of_field_values(
    records, pixels):
  modules.configure([__name__])
  EchoHandler.seen.clear()
  handler = create(f'{__name__}:EchoHandler', [('text', 'phrase'),
                                               ('png', 'png'),
                                               ('images', 'grid', [8, 8, 1]),
                                               ('ink', 'ink')],
                   [('upper', 'str'), ('size', 'int64'), ('total', 'float64')],
                   framework='beam_model_handler')
  got = run(handler, records)
  assert len(EchoHandler.seen) == RECORDS
  for record, example, image in zip(records, EchoHandler.seen, pixels):
    assert sorted(example) == ['images', 'ink', 'png', 'text']
    assert example['text'] == record.phrase
    assert example['png'] == record.png
    assert example['images'].dtype == np.float32
    np.testing.assert_array_equal(example['images'], image.reshape(8, 8, 1))
    assert example['ink'].dtype == np.int64 and example['ink'] == record.ink
  assert [r['upper'] for r in got] == [r.phrase.upper() for r in records]
  assert column(got, 'size').tolist() == [len(r.png) for r in records]
  np.testing.assert_allclose(column(got, 'total'), pixels.sum(axis=1))
