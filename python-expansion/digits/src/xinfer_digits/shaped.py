"""Example models whose inputs and outputs are not one float array and scores.

Each is trained on data that ships inside scikit-learn (nothing downloaded),
and each has a reference: what it computes for every record when called in
plain Python with its own framework, one JSON object per line
(``<model>.reference.jsonl``: ``id`` and each output by name).

==========================  ===================================================
``digits-cnn.pt``           TorchScript CNN on the digits as 8x8x1 images
                            (``images``, NHWC; TorchScript records no shape):
                            returns ``(probabilities, embedding)``, in order
``digits-two-input/``       TensorFlow SavedModel with two named inputs,
                            ``pixels`` (float32 [N, 64]) and ``ink`` (int64
                            [N], the count of inked pixels), and two named
                            outputs, ``probabilities`` and ``digit`` (int64)
``diabetes.xgb.json``       XGBoost regressor on scikit-learn's diabetes data
                            (``diabetes.csv``: id, target, f0..f9): one number
                            per record
``vader-sentiment/``        Hugging Face text classifier (a tiny BERT, its
                            WordPiece tokenizer trained with ``tokenizers``)
                            on the human-rated words and phrases of the VADER
                            sentiment lexicon, which the ``vaderSentiment``
                            package ships (``vader.csv``: id, phrase, rating,
                            label): NEGATIVE or POSITIVE and its probability
==========================  ===================================================

The digits and diabetes data ship inside scikit-learn, the lexicon inside
vaderSentiment (its entries rated between -0.5 and 0.5 are left out).
"""

import csv
import json
import os

import numpy as np

SEED = 20261204
CNN = 'digits-cnn.pt'
TWO_INPUT = 'digits-two-input'
XGB = 'diabetes.xgb.json'
DIABETES = 'diabetes.csv'
TEXT = 'vader-sentiment'
VADER = 'vader.csv'
MODELS = (CNN, TWO_INPUT, XGB, TEXT)
LABELS = ('NEGATIVE', 'POSITIVE')


def ink(features: np.ndarray) -> np.ndarray:
  """The two-input model's second input: how many pixels are inked."""
  return (features > 0).sum(axis=1).astype(np.int64)


def train_cnn(features: np.ndarray, labels: np.ndarray, path: str,
              train_idx: np.ndarray) -> None:
  import torch
  from torch import nn

  class DigitsCnn(nn.Module):
    """8x8x1 images (pixels 0-16, NHWC) to class probabilities and a
    16-value embedding."""
    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                    nn.MaxPool2d(2),
                                    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                    nn.MaxPool2d(2), nn.Flatten(),
                                    nn.Linear(64, 16), nn.ReLU())
      self.classify = nn.Linear(16, 10)

    def forward(self, images: torch.Tensor):
      embedding = self.features(images.permute(0, 3, 1, 2) / 16.0)
      return torch.softmax(self.classify(embedding), dim=1), embedding

  torch.manual_seed(SEED)
  net = DigitsCnn()
  optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
  x = torch.from_numpy(features[train_idx].reshape(-1, 8, 8, 1))
  y = torch.from_numpy(labels[train_idx])
  for _ in range(150):
    optimizer.zero_grad()
    probabilities, _ = net(x)
    torch.nn.functional.nll_loss(torch.log(probabilities + 1e-9), y).backward()
    optimizer.step()
  net.eval()
  torch.jit.save(torch.jit.script(net), path)


def train_two_input(features: np.ndarray, labels: np.ndarray, path: str,
                    train_idx: np.ndarray) -> None:
  """A two-layer network in plain TensorFlow, exported with a signature that
  names both inputs and both outputs."""
  import tensorflow as tf
  tf.random.set_seed(SEED)

  class TwoInput(tf.Module):
    def __init__(self):
      super().__init__()
      init = tf.keras.initializers.GlorotUniform(seed=SEED)
      self.w1 = tf.Variable(init((65, 32)))
      self.b1 = tf.Variable(tf.zeros(32))
      self.w2 = tf.Variable(init((32, 10)))
      self.b2 = tf.Variable(tf.zeros(10))

    def probabilities(self, pixels, ink_count):
      x = tf.concat(
          [pixels / 16.0,
           tf.cast(ink_count, tf.float32)[:, tf.newaxis] / 64.0],
          axis=1)
      hidden = tf.nn.relu(x @ self.w1 + self.b1)
      return tf.nn.softmax(hidden @ self.w2 + self.b2)

    @tf.function(input_signature=[
        tf.TensorSpec([None, 64], tf.float32, name='pixels'),
        tf.TensorSpec([None], tf.int64, name='ink')
    ])
    def serve(self, pixels, ink):  # pylint: disable=redefined-outer-name
      p = self.probabilities(pixels, ink)
      return {'probabilities': p, 'digit': tf.argmax(p, axis=1)}

  model = TwoInput()
  optimizer = tf.keras.optimizers.Adam(0.02)
  x = tf.constant(features[train_idx])
  n = tf.constant(ink(features[train_idx]))
  y = tf.constant(labels[train_idx])
  variables = [model.w1, model.b1, model.w2, model.b2]
  for _ in range(300):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(
          tf.keras.losses.sparse_categorical_crossentropy(
              y, model.probabilities(x, n)))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  tf.saved_model.save(model, path, signatures={'serving_default': model.serve})


def load_diabetes():
  from sklearn import datasets
  data = datasets.load_diabetes()
  return data.data.astype(np.float64), data.target.astype(np.float64)


def write_diabetes(path: str, features: np.ndarray, target: np.ndarray):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'target'] +
                    [f'f{i}' for i in range(features.shape[1])])
    for i, (x, y) in enumerate(zip(features, target)):
      writer.writerow([i, repr(float(y))] + [repr(float(v)) for v in x])


def train_xgboost(features: np.ndarray, target: np.ndarray, path: str) -> float:
  """Returns the held-out R^2."""
  import xgboost
  order = np.random.default_rng(SEED).permutation(len(target))
  cut = int(0.8 * len(target))
  model = xgboost.XGBRegressor(n_estimators=200,
                               max_depth=3,
                               learning_rate=0.05,
                               random_state=SEED)
  model.fit(features[order[:cut]], target[order[:cut]])
  model.save_model(path)
  return float(model.score(features[order[cut:]], target[order[cut:]]))


def load_vader():
  """(phrases, ratings, labels) of the VADER lexicon's clearly rated entries."""
  import vaderSentiment
  path = os.path.join(os.path.dirname(vaderSentiment.__file__),
                      'vader_lexicon.txt')
  phrases, ratings = [], []
  with open(path, encoding='utf-8') as f:
    for line in f:
      cells = line.rstrip('\n').split('\t')
      rating = float(cells[1])
      if abs(rating) >= 0.5:
        phrases.append(cells[0])
        ratings.append(rating)
  ratings = np.asarray(ratings)
  return phrases, ratings, (ratings > 0).astype(np.int64)


def write_vader(path: str, phrases, ratings, labels):
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'phrase', 'rating', 'label'])
    for i, (p, r, y) in enumerate(zip(phrases, ratings, labels)):
      writer.writerow([i, p, repr(float(r)), LABELS[y]])


def train_text(phrases, labels: np.ndarray, path: str) -> float:
  """A tiny BERT and its WordPiece tokenizer, trained here; returns the
  held-out accuracy."""
  import torch
  import transformers
  from tokenizers import BertWordPieceTokenizer
  transformers.utils.logging.disable_progress_bar()
  torch.manual_seed(SEED)
  order = np.random.default_rng(SEED).permutation(len(labels))
  cut = int(0.8 * len(labels))
  train_idx, test_idx = order[:cut], order[cut:]
  wordpiece = BertWordPieceTokenizer(lowercase=True)
  wordpiece.train_from_iterator([phrases[i] for i in train_idx],
                                vocab_size=2000,
                                min_frequency=1,
                                show_progress=False)
  tokenizer = transformers.PreTrainedTokenizerFast(
      tokenizer_object=wordpiece._tokenizer,  # pylint: disable=protected-access
      unk_token='[UNK]',
      pad_token='[PAD]',
      cls_token='[CLS]',
      sep_token='[SEP]',
      mask_token='[MASK]',
      model_max_length=32)
  config = transformers.BertConfig(vocab_size=tokenizer.vocab_size,
                                   hidden_size=48,
                                   num_hidden_layers=2,
                                   num_attention_heads=2,
                                   intermediate_size=96,
                                   max_position_embeddings=32,
                                   num_labels=2,
                                   id2label=dict(enumerate(LABELS)),
                                   label2id={
                                       l: i
                                       for i, l in enumerate(LABELS)
                                   })
  model = transformers.BertForSequenceClassification(config)
  optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

  def encode(idx):
    return tokenizer([phrases[i] for i in idx],
                     padding=True,
                     truncation=True,
                     return_tensors='pt')

  rng = np.random.default_rng(SEED)
  model.train()
  for _ in range(8):
    for start in range(0, len(train_idx), 64):
      batch = train_idx[start:start + 64]
      optimizer.zero_grad()
      out = model(**encode(batch), labels=torch.from_numpy(labels[batch]))
      out.loss.backward()
      optimizer.step()
    train_idx = rng.permutation(train_idx)
  model.eval()
  with torch.no_grad():
    predicted = model(**encode(test_idx)).logits.argmax(dim=1).numpy()
  model.save_pretrained(path)
  tokenizer.save_pretrained(path)
  return float(np.mean(predicted == labels[test_idx]))


def reference(name: str, path: str, features) -> list:
  """What the model computes for each record, called with its own framework."""
  if name == TEXT:
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import transformers
    transformers.utils.logging.disable_progress_bar()
    pipe = transformers.pipeline('text-classification',
                                 model=path,
                                 tokenizer=path,
                                 device='cpu')
    out = []
    for ranked in pipe(list(features), top_k=None):
      by_label = {r['label']: r['score'] for r in ranked}
      out.append({
          'label': ranked[0]['label'],
          'score': ranked[0]['score'],
          'scores': [by_label[l] for l in LABELS]
      })
    return out
  if name == CNN:
    import torch
    net = torch.jit.load(path)
    with torch.no_grad():
      probabilities, embedding = net(
          torch.from_numpy(features.reshape(-1, 8, 8, 1)))
    return [{
        'probabilities': p.tolist(),
        'embedding': e.tolist()
    } for p, e in zip(probabilities.numpy(), embedding.numpy())]
  if name == TWO_INPUT:
    import tensorflow as tf
    signature = tf.saved_model.load(path).signatures['serving_default']
    out = signature(pixels=tf.constant(features),
                    ink=tf.constant(ink(features)))
    return [{
        'probabilities': p.tolist(),
        'digit': int(d)
    } for p, d in zip(out['probabilities'].numpy(), out['digit'].numpy())]
  import xgboost
  booster = xgboost.Booster()
  booster.load_model(path)
  return [{
      'prediction': float(v)
  } for v in booster.predict(xgboost.DMatrix(features))]


def write_reference(path: str, outputs: list):
  with open(path, 'w') as f:
    for i, values in enumerate(outputs):
      f.write(json.dumps(dict(id=i, **values)) + '\n')
