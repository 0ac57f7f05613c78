"""Hugging Face transformers: a local model directory run by a ``pipeline``.

Usage (Java: ``Model.of(dir).withTask("text-classification")``; the framework
is detected from the directory's ``config.json``)::

  from xinfer.handlers import create_handler
  handler = create_handler('huggingface', '/models/vader-sentiment',
                           task='text-classification',
                           inputs=[{'name': 'text', 'field': 'phrase'}],
                           outputs=[{'name': 'label', 'type': 'str'},
                                    {'name': 'score', 'type': 'float32'}])

Nothing is downloaded: the model and its tokenizer load from the directory
(``save_pretrained``), with the Hub offline.
"""

import os
import sys

import numpy as np

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import require_cuda

TEXT_CLASSIFICATION = 'text-classification'
FEATURE_EXTRACTION = 'feature-extraction'
TASKS = (TEXT_CLASSIFICATION, FEATURE_EXTRACTION)


def keep_triton_out_on_cpu():
  """Triton, PyTorch's GPU kernel compiler, which transformers imports through
  ``torch._dynamo``, links an LLVM of its own: in a process that loaded
  TensorFlow too, loading it aborts the process ("Option ... registered more
  than once"), so one worker could not serve a TensorFlow and a Hugging Face
  model. Without a GPU it has nothing to do, so there it is kept out."""
  import torch
  if 'triton' not in sys.modules and not torch.cuda.is_available():
    sys.modules['triton'] = None


class HuggingFaceRowHandler(RowModelHandler):
  """A transformers ``pipeline`` on one text input per record.

  Args (beyond RowModelHandler's):
    task: ``text-classification`` (outputs ``label``: the top label, STRING;
      ``score``: its probability; ``scores``: every label's probability, in
      the model's label order) or ``feature-extraction`` (output
      ``embedding``: the mean of the last hidden states over the tokens).
      Without declared outputs, a text classifier's ``scores`` become the
      scores (and ``predicted_class`` the top label's index).

  The text comes from the one named input (``withInput("text", field)``) or
  what a preprocess function returns. inference_args are keyword arguments of
  the pipeline call.
  """
  accepts_inference_args = True
  gpu = True

  def _check_options(self, options):
    unknown = set(options) - {'task'}
    if unknown:
      super()._check_options({k: options[k] for k in unknown})
    task = options.get('task') or TEXT_CLASSIFICATION
    if task not in TASKS:
      raise ValueError(
          f"RunInference: Hugging Face task '{task}' is not one of "
          f"{', '.join(TASKS)} (withTask in Java).")
    if len(self.named_inputs) > 1:
      raise ValueError(
          'RunInference: a Hugging Face pipeline takes one text per record; '
          f"withInput names {', '.join(i.name for i in self.named_inputs)}.")
    self._task = task

  def _load(self, path: str) -> LoadedModel:
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    keep_triton_out_on_cpu()
    import torch
    import transformers
    require_cuda(self._device, torch.cuda.is_available(), 'PyTorch')
    transformers.utils.logging.disable_progress_bar()
    pipe = transformers.pipeline(self._task,
                                 model=path,
                                 tokenizer=path,
                                 device=self._device)
    labels = [
        pipe.model.config.id2label[i]
        for i in range(len(pipe.model.config.id2label))
    ]

    def text_of(example):
      if isinstance(example, dict):
        (example, ) = example.values()
      if isinstance(example, bytes):
        example = example.decode('utf-8')
      if not isinstance(example, str):
        raise TypeError(
            f'RunInference: a Hugging Face pipeline takes text; got '
            f'{type(example).__name__}. Name a STRING field with withInput.')
      return example

    def predict(examples, **kwargs):
      texts = [text_of(e) for e in examples]
      if self._task == FEATURE_EXTRACTION:
        return [{
            'embedding': np.asarray(tokens[0], dtype=np.float32).mean(axis=0)
        } for tokens in pipe(texts, **kwargs)]
      results = []
      for ranked in pipe(texts, top_k=None, **kwargs):
        by_label = {r['label']: r['score'] for r in ranked}
        scores = np.asarray([by_label[l] for l in labels], dtype=np.float32)
        if not self.outputs:
          results.append(scores)
          continue
        results.append({
            'label': ranked[0]['label'],
            'score': ranked[0]['score'],
            'scores': scores
        })
      return results

    return LoadedModel(predict, None, stacked=False)


# The registry's entry (xinfer.handlers): detected from a directory holding
# config.json (see handlers.detect_framework), or named.
FRAMEWORK = 'huggingface'
HANDLER = HuggingFaceRowHandler
SUFFIXES = ()
