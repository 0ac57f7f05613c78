"""The example models and data: scikit-learn's bundled handwritten digits.

``python -m xinfer_digits prepare --out DIR`` writes, idempotently:

- ``DIR/digits.csv``: 1,797 labelled 8x8 images, ``id,label,p0..p63`` (pixels 0-16);
- one model per framework, each trained on the same seeded 80% of them:

  ========================  ===========================================
  ``digits-mlp/``           TensorFlow SavedModel (Keras MLP)
  ``digits-mlp.keras``      the same Keras model as a ``.keras`` file
  ``digits-mlp-v2/``        a second SavedModel (another MLP): model refresh
  ``digits-torch.pt``       PyTorch TorchScript (``xinfer.examples.nets``)
  ``digits-torch-state.pt`` PyTorch state dict of ``DigitsNet(hidden=32)``
  ``digits-sklearn.joblib`` scikit-learn logistic regression
  ``digits-sklearn.onnx``   that model converted to ONNX (skl2onnx)
  ========================  ===========================================

- ``DIR/<model>.reference.csv``: ``id,predicted_class,s0..s9``, what each model
  computes for every record, called in plain Python with its own framework
  (``digits-torch-state.pt.t2.reference.csv``: with ``temperature=2``);
- models with other inputs and outputs (an image CNN with two outputs, a
  two-input SavedModel, an XGBoost regressor on ``diabetes.csv``), each with a
  ``<model>.reference.jsonl`` (``xinfer_digits.shaped``).

Nothing is downloaded: the images ship inside scikit-learn.
"""

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import shutil
from typing import Optional

import numpy as np

from xinfer_digits import shaped

MODEL_NAME = 'digits-mlp'
SEED = 20261124
_STAMP = 'prepared.json'
_VERSION = 4
TORCH_HIDDEN = 32
MODELS = ('digits-mlp', 'digits-mlp.keras', 'digits-mlp-v2', 'digits-torch.pt',
          'digits-torch-state.pt', 'digits-sklearn.joblib',
          'digits-sklearn.onnx')


def load_digits():
  from sklearn import datasets
  digits = datasets.load_digits()
  return digits.data.astype(np.float32), digits.target.astype(np.int64)


def write_dataset(path: str, features: np.ndarray, labels: np.ndarray):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'label'] +
                    [f'p{i}' for i in range(features.shape[1])])
    for i, (x, y) in enumerate(zip(features, labels)):
      writer.writerow([i, int(y)] + [repr(float(v)) for v in x])


def split(labels: np.ndarray):
  """The seeded 80/20 split every example model is trained and tested on."""
  order = np.random.default_rng(SEED).permutation(len(labels))
  cut = int(0.8 * len(labels))
  return order[:cut], order[cut:]


def train(features: np.ndarray,
          labels: np.ndarray,
          export_dir: str,
          hidden: int = 64,
          seed: int = SEED,
          keras_file: Optional[str] = None) -> float:
  """Trains a Keras MLP, exports a SavedModel; returns held-out accuracy."""
  import tensorflow as tf
  import keras
  keras.utils.set_random_seed(seed)
  train_idx, test_idx = split(labels)
  model = keras.Sequential([
      keras.Input(shape=(features.shape[1], ), dtype='float32', name='pixels'),
      keras.layers.Rescaling(1.0 / 16.0),
      keras.layers.Dense(hidden, activation='relu'),
      keras.layers.Dense(10, activation='softmax'),
  ])
  model.compile(optimizer=keras.optimizers.Adam(0.01),
                loss='sparse_categorical_crossentropy',
                metrics=['accuracy'])
  model.fit(features[train_idx],
            labels[train_idx],
            epochs=40,
            batch_size=64,
            verbose=0)
  _, accuracy = model.evaluate(features[test_idx], labels[test_idx], verbose=0)
  if os.path.exists(export_dir):
    shutil.rmtree(export_dir)
  tf.get_logger().setLevel('ERROR')
  model.export(export_dir, verbose=False)
  if keras_file:
    model.save(keras_file)
  return float(accuracy)


def train_torch(features: np.ndarray, labels: np.ndarray, script_path: str,
                state_path: str) -> float:
  """Trains ``DigitsNet``; writes TorchScript and a state dict."""
  import torch
  from xinfer.examples.nets import DigitsNet
  torch.manual_seed(SEED)
  train_idx, test_idx = split(labels)
  net = DigitsNet(hidden=TORCH_HIDDEN)
  optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
  x = torch.from_numpy(features[train_idx])
  y = torch.from_numpy(labels[train_idx])
  for _ in range(300):
    optimizer.zero_grad()
    loss = torch.nn.functional.nll_loss(torch.log(net(x) + 1e-9), y)
    loss.backward()
    optimizer.step()
  net.eval()
  torch.save(net.state_dict(), state_path)
  with torch.no_grad():
    torch.jit.save(torch.jit.trace(net, x[:1]), script_path)
    predicted = net(torch.from_numpy(features[test_idx])).argmax(dim=1).numpy()
  return float(np.mean(predicted == labels[test_idx]))


def train_sklearn(features: np.ndarray, labels: np.ndarray, joblib_path: str,
                  onnx_path: str) -> float:
  """Trains a logistic regression; writes it with joblib and as ONNX."""
  import joblib
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  from skl2onnx import to_onnx
  train_idx, test_idx = split(labels)
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
  model.fit(features[train_idx].astype(np.float64), labels[train_idx])
  joblib.dump(model, joblib_path)
  onnx_model = to_onnx(model,
                       features[:1].astype(np.float32),
                       options={'zipmap': False},
                       target_opset=17)
  with open(onnx_path, 'wb') as f:
    f.write(onnx_model.SerializeToString())
  return float(model.score(features[test_idx], labels[test_idx]))


def reference_scores(model_path: str, features: np.ndarray,
                     **inference_args) -> np.ndarray:
  """What a saved model computes, called directly with its own framework."""
  name = os.path.basename(model_path)
  if name.endswith('.keras'):
    import keras
    return np.asarray(keras.models.load_model(model_path)(features))
  if name.endswith('.pt'):
    import torch
    if 'state' in name:
      from xinfer.examples.nets import DigitsNet
      net = DigitsNet(hidden=TORCH_HIDDEN)
      net.load_state_dict(torch.load(model_path, weights_only=True))
    else:
      net = torch.jit.load(model_path)
    net.eval()
    with torch.no_grad():
      return net(torch.from_numpy(features), **inference_args).numpy()
  if name.endswith('.joblib'):
    import joblib
    return joblib.load(model_path).predict_proba(features.astype(np.float64))
  if name.endswith('.onnx'):
    import onnxruntime
    session = onnxruntime.InferenceSession(model_path,
                                           providers=['CPUExecutionProvider'])
    return session.run(['probabilities'], {'X': features})[0]
  import tensorflow as tf
  loaded = tf.saved_model.load(model_path)
  signature = loaded.signatures['serving_default']
  (input_name, ) = signature.structured_input_signature[1].keys()
  (output_name, ) = signature.structured_outputs.keys()
  return signature(**{input_name: tf.constant(features)})[output_name].numpy()


def write_reference(path: str, scores: np.ndarray):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'predicted_class'] +
                    [f's{i}' for i in range(scores.shape[1])])
    for i, row in enumerate(scores):
      writer.writerow([i, int(np.argmax(row))] + [repr(float(s)) for s in row])


def _fresh(fn, *args, **kwargs):
  """``fn(*args, **kwargs)`` in a new Python process."""
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(fn, *args, **kwargs).result()


def prepare(out_dir: str, force: bool = False) -> dict:
  """Writes data, models and references unless an up-to-date set is there."""
  stamp_path = os.path.join(out_dir, _STAMP)
  if not force and os.path.exists(stamp_path):
    with open(stamp_path) as f:
      stamp = json.load(f)
    if stamp.get('version') == _VERSION and all(
        os.path.exists(os.path.join(out_dir, p)) for p in stamp['files']):
      return stamp
  os.makedirs(out_dir, exist_ok=True)
  path = lambda name: os.path.join(out_dir, name)
  features, labels = load_digits()
  write_dataset(path('digits.csv'), features, labels)
  # Each framework trains in a fresh process: TensorFlow and PyTorch training in
  # one process abort (both register LLVM options).
  held_out = {
      'digits-mlp': _fresh(train,
                           features,
                           labels,
                           path('digits-mlp'),
                           keras_file=path('digits-mlp.keras')),
      'digits-mlp-v2': _fresh(train,
                              features,
                              labels,
                              path('digits-mlp-v2'),
                              hidden=24,
                              seed=SEED + 1),
      'digits-torch': _fresh(train_torch, features, labels,
                             path('digits-torch.pt'),
                             path('digits-torch-state.pt')),
      'digits-sklearn': _fresh(train_sklearn, features, labels,
                               path('digits-sklearn.joblib'),
                               path('digits-sklearn.onnx')),
  }
  files = ['digits.csv']
  accuracy = {}
  for model in MODELS:
    scores = _fresh(reference_scores, path(model), features)
    write_reference(path(f'{model}.reference.csv'), scores)
    accuracy[model] = float(np.mean(np.argmax(scores, axis=1) == labels))
    files += [model, f'{model}.reference.csv']
  write_reference(
      path('digits-torch-state.pt.t2.reference.csv'),
      _fresh(reference_scores,
             path('digits-torch-state.pt'),
             features,
             temperature=2.0))
  files.append('digits-torch-state.pt.t2.reference.csv')
  train_idx, _ = split(labels)
  _fresh(shaped.train_cnn, features, labels, path(shaped.CNN), train_idx)
  _fresh(shaped.train_two_input, features, labels, path(shaped.TWO_INPUT),
         train_idx)
  diabetes, target = shaped.load_diabetes()
  shaped.write_diabetes(path(shaped.DIABETES), diabetes, target)
  held_out[shaped.XGB] = _fresh(shaped.train_xgboost, diabetes, target,
                                path(shaped.XGB))
  phrases, ratings, sentiment = shaped.load_vader()
  shaped.write_vader(path(shaped.VADER), phrases, ratings, sentiment)
  held_out[shaped.TEXT] = _fresh(shaped.train_text, phrases, sentiment,
                                 path(shaped.TEXT))
  for model in shaped.MODELS:
    data = {shaped.XGB: diabetes, shaped.TEXT: phrases}.get(model, features)
    outputs = _fresh(shaped.reference, model, path(model), data)
    shaped.write_reference(path(f'{model}.reference.jsonl'), outputs)
    files += [model, f'{model}.reference.jsonl']
    if model in (shaped.CNN, shaped.TWO_INPUT):
      predicted = np.argmax([o['probabilities'] for o in outputs], axis=1)
      accuracy[model] = float(np.mean(predicted == labels))
  files += [shaped.DIABETES, shaped.VADER]
  stamp = {
      'version': _VERSION,
      'records': int(len(labels)),
      'held_out_accuracy': held_out,
      'accuracy': accuracy,
      'files': files,
  }
  with open(stamp_path, 'w') as f:
    json.dump(stamp, f, indent=2)
  return stamp


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m xinfer_digits')
  sub = parser.add_subparsers(dest='command', required=True)
  prep = sub.add_parser('prepare', help='write data, model and reference')
  prep.add_argument('--out', required=True)
  prep.add_argument('--force', action='store_true')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  stamp = prepare(args.out, force=args.force)
  print(f"digits: {stamp['records']} records in {args.out}")
  for name, accuracy in stamp['held_out_accuracy'].items():
    measure = 'R^2' if name.endswith('.xgb.json') else 'accuracy'
    print(f'  {name}: held-out {measure} {accuracy:.3f}')
  for name in shaped.MODELS[:2]:
    print(f"  {name}: accuracy {stamp['accuracy'][name]:.3f} (all records)")
  return 0
