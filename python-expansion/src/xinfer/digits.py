"""The demo's model and data: scikit-learn's bundled handwritten digits.

``python -m xinfer.digits prepare --out DIR`` writes, idempotently:

- ``DIR/digits.csv``: 1,797 labelled 8x8 images, ``id,label,p0..p63`` (pixels 0-16);
- ``DIR/digits-mlp/``: a TensorFlow SavedModel (a small MLP) trained on 80% of them;
- ``DIR/digits-mlp.reference.csv``: ``id,predicted_class,s0..s9``, what that
  SavedModel computes for every record, called in plain Python.

Nothing is downloaded: the images ship inside scikit-learn.
"""

import argparse
import csv
import json
import os
import shutil
import sys

import numpy as np

MODEL_NAME = 'digits-mlp'
SEED = 20261124
_STAMP = 'prepared.json'
_VERSION = 1


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


def train(features: np.ndarray, labels: np.ndarray, export_dir: str) -> float:
  """Trains the MLP on a seeded 80% split; returns held-out accuracy."""
  import tensorflow as tf
  import keras
  keras.utils.set_random_seed(SEED)
  order = np.random.default_rng(SEED).permutation(len(labels))
  cut = int(0.8 * len(labels))
  train_idx, test_idx = order[:cut], order[cut:]
  model = keras.Sequential([
      keras.Input(shape=(features.shape[1], ), dtype='float32', name='pixels'),
      keras.layers.Rescaling(1.0 / 16.0),
      keras.layers.Dense(64, activation='relu'),
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
  return float(accuracy)


def reference_scores(model_dir: str, features: np.ndarray) -> np.ndarray:
  """What the exported SavedModel computes, called directly with TensorFlow."""
  import tensorflow as tf
  loaded = tf.saved_model.load(model_dir)
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


def prepare(out_dir: str, force: bool = False) -> dict:
  """Writes data, model and reference unless an up-to-date set is there."""
  stamp_path = os.path.join(out_dir, _STAMP)
  if not force and os.path.exists(stamp_path):
    with open(stamp_path) as f:
      stamp = json.load(f)
    if stamp.get('version') == _VERSION and all(
        os.path.exists(os.path.join(out_dir, p)) for p in stamp['files']):
      return stamp
  os.makedirs(out_dir, exist_ok=True)
  features, labels = load_digits()
  data_path = os.path.join(out_dir, 'digits.csv')
  model_dir = os.path.join(out_dir, MODEL_NAME)
  reference_path = os.path.join(out_dir, f'{MODEL_NAME}.reference.csv')
  write_dataset(data_path, features, labels)
  held_out_accuracy = train(features, labels, model_dir)
  scores = reference_scores(model_dir, features)
  write_reference(reference_path, scores)
  stamp = {
      'version': _VERSION,
      'records': int(len(labels)),
      'held_out_accuracy': held_out_accuracy,
      'accuracy': float(np.mean(np.argmax(scores, axis=1) == labels)),
      'files': ['digits.csv', MODEL_NAME, f'{MODEL_NAME}.reference.csv'],
  }
  with open(stamp_path, 'w') as f:
    json.dump(stamp, f, indent=2)
  return stamp


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m xinfer.digits')
  sub = parser.add_subparsers(dest='command', required=True)
  prep = sub.add_parser('prepare', help='write data, model and reference')
  prep.add_argument('--out', required=True)
  prep.add_argument('--force', action='store_true')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  stamp = prepare(args.out, force=args.force)
  print(
      f"digits: {stamp['records']} records, model {MODEL_NAME} held-out accuracy "
      f"{stamp['held_out_accuracy']:.3f}, all-records accuracy "
      f"{stamp['accuracy']:.3f} in {args.out}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
