"""Keyed inference: each key's records run on the model mapped to it, with a
bound on the models loaded at once per worker (least recently used out first).

Usage::

  from xinfer.handlers import KeyedRowModelHandler, create_handler
  tf = create_handler(None, '/models/digits-mlp', feature_field='features')
  sk = create_handler(None, '/models/digits-sklearn.joblib',
                      feature_field='features')
  handler = KeyedRowModelHandler([(['tf'], tf), (['sk'], sk)],
                                 max_models_in_memory=1)
  # examples: (key, Row) pairs; predictions: (key, PredictionResult) pairs
"""

import collections
import logging
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult

from xinfer import metrics
from xinfer.handlers.base import METRICS_NAMESPACE
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import _ModelSlot

_LOG = logging.getLogger(__name__)


class _ModelCache:
  """The models of a keyed handler held in one worker, least recently used
  first out when more than ``capacity`` are loaded."""
  def __init__(self, capacity: Optional[int]):
    self._capacity = capacity
    self._slots: 'collections.OrderedDict[str, _ModelSlot]' = (
        collections.OrderedDict())
    self._lock = threading.Lock()

  def get(self, model_key: str, handler: RowModelHandler) -> _ModelSlot:
    with self._lock:
      slot = self._slots.get(model_key)
      if slot is not None:
        self._slots.move_to_end(model_key)
        return slot
    started = time.monotonic()
    slot = handler.load_model()
    Metrics.distribution(METRICS_NAMESPACE,
                         metrics.KEYED_LOAD_MODEL_LATENCY_MILLIS).update(
                             int((time.monotonic() - started) * 1000))
    with self._lock:
      self._slots[model_key] = slot
      self._slots.move_to_end(model_key)
      while self._capacity and len(self._slots) > self._capacity:
        evicted, _ = self._slots.popitem(last=False)
        Metrics.counter(METRICS_NAMESPACE, metrics.MODEL_EVICTIONS).inc()
        _LOG.info('RunInference: unloaded model %s (max %d in memory)', evicted,
                  self._capacity)
    return slot


class KeyedRowModelHandler(ModelHandler[Tuple[str, Any],
                                        Tuple[str,
                                              PredictionResult], _ModelCache]):
  """Keyed examples ``(key, Row)`` in, ``(key, PredictionResult)`` out, each
  key's records run by the model mapped to it.

  Beam's ``KeyedModelHandler`` does this too, but with several models it loads
  each through a separate multi-process manager (a server process and proxied
  calls) and ignores the handlers' batching and metrics settings. This one keeps
  the models in the worker process, least recently used unloaded first when more
  than ``max_models_in_memory`` are loaded.

  Args:
    mappings: ``(keys, handler)`` pairs; every key maps to one handler.
    default: the handler for keys no mapping names (None: such keys fail).
    max_models_in_memory: the most models loaded at once per worker (None: all).
  """
  _DEFAULT = ''

  def __init__(self,
               mappings: Sequence[Tuple[Sequence[str], RowModelHandler]],
               *,
               default: Optional[RowModelHandler] = None,
               max_models_in_memory: Optional[int] = None):
    super().__init__()
    if not mappings and default is None:
      raise ValueError(
          'RunInference: keyed inference needs at least one model.')
    if max_models_in_memory is not None and max_models_in_memory < 1:
      raise ValueError(
          'RunInference: max_models_in_memory must be at least 1, got '
          f'{max_models_in_memory}.')
    self._handlers: Dict[str, RowModelHandler] = {}
    self._model_key: Dict[str, str] = {}
    for keys, handler in mappings:
      if not keys:
        raise ValueError(
            f"RunInference: the model '{handler.model_id}' is mapped to no keys."
        )
      model_key = 'key:' + keys[0]
      self._handlers[model_key] = handler
      for key in keys:
        if key in self._model_key:
          raise ValueError(
              f"RunInference: key '{key}' is mapped to two models; map each key "
              'to one model.')
        self._model_key[key] = model_key
    if default is not None:
      self._handlers[self._DEFAULT] = default
    self._has_default = default is not None
    self._max_models = max_models_in_memory
    self._first = next(iter(self._handlers.values()))

  def _model_key_of(self, key: str) -> str:
    model_key = self._model_key.get(key)
    if model_key is not None:
      return model_key
    if self._has_default:
      return self._DEFAULT
    raise KeyError(
        f"RunInference: key '{key}' has no model (keys with a model: "
        f"{', '.join(self.keys)}).")

  @property
  def keys(self) -> List[str]:
    return sorted(self._model_key)

  def check_model_exists(self):
    for handler in self._handlers.values():
      handler.check_model_exists()

  def bind_schema(self, fields):
    for handler in self._handlers.values():
      handler.bind_schema(fields)

  def load_model(self) -> _ModelCache:
    return _ModelCache(self._max_models)

  def run_inference(self, batch, model: _ModelCache, inference_args=None):
    by_model = collections.defaultdict(list)
    for position, (key, _) in enumerate(batch):
      by_model[self._model_key_of(key)].append(position)
    results: List[Any] = [None] * len(batch)
    for model_key, positions in by_model.items():
      handler = self._handlers[model_key]
      slot = model.get(model_key, handler)
      predictions = handler.run_inference([batch[p][1] for p in positions],
                                          slot, inference_args)
      for position, prediction in zip(positions, predictions):
        results[position] = (batch[position][0], prediction)
    return results

  def validate_inference_args(self, inference_args):
    for handler in self._handlers.values():
      handler.validate_inference_args(inference_args)

  def get_num_bytes(self, batch) -> int:
    return sum(self._handlers[self._model_key_of(key)].get_num_bytes([row])
               for key, row in batch)

  def get_metrics_namespace(self) -> str:
    return METRICS_NAMESPACE

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    return self._first.batch_elements_kwargs()
