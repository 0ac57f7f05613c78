"""Model handlers built from plain arguments, so Java can name them.

Each handler follows Beam's ``ModelHandler`` contract: ``load_model`` once per
worker, ``run_inference`` per batch. A framework subclass only says how to load
a model file (``_load``); everything else is shared:

- each record becomes a model input on its own (``xinfer.convert``), so a bad
  record becomes a :class:`Failure` and the rest of the batch still runs;
- a batch the model rejects is retried record by record, so only the records the
  model cannot take fail;
- optional user hooks: ``preprocess`` (record -> model input) and ``postprocess``
  (model output -> scores), named as ``package.module:function`` and imported
  only from the modules the operator allowed (``xinfer.modules``);
- optional pinning: ``model_sha256``, the digest the model file must have before
  it is loaded (unpickling a scikit-learn file runs code);
- optional model refresh: the model URI is a glob pattern of versions, the
  newest (by natural name order, like TF Serving's numbered versions) is loaded,
  and a newer one is picked up between batches.

Predictions are Beam ``PredictionResult``s whose ``inference`` is either the
scores or a :class:`Failure`; ``xinfer.transforms`` routes them.
"""

import collections
import glob
import hashlib
import importlib
import logging
import os
import re
import threading
import time
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult

from xinfer import convert
from xinfer import modules

_LOG = logging.getLogger(__name__)

DEFAULT_MIN_BATCH_SIZE = 1
DEFAULT_MAX_BATCH_SIZE = 256
METRICS_NAMESPACE = 'xinfer'

# The stages a record can fail in, as reported in the dead-letter output.
PREPROCESSING = 'preprocessing'
CONVERSION = 'conversion'
INFERENCE = 'inference'
POSTPROCESSING = 'postprocessing'


class Failure(NamedTuple):
  """Why one record got no prediction."""
  stage: str
  error_type: str
  message: str

  @classmethod
  def of(cls, stage: str, error: BaseException) -> 'Failure':
    return cls(stage, type(error).__name__, str(error))


class LoadedModel:
  """A model as xinfer calls it: a batch function and its input signature.

  ``predict(x, **inference_args)`` takes a batch (batch dimension first) and
  returns one output per record. ``input_shape`` includes the batch dimension;
  ``None`` marks a dimension the model does not fix (a ``None`` shape: the
  model file does not say).
  """
  def __init__(self,
               predict: Callable[..., Any],
               input_shape: Optional[Sequence[Optional[int]]],
               input_dtype=np.float32):
    self.predict = predict
    self.input_shape = None if input_shape is None else tuple(input_shape)
    self.input_dtype = input_dtype


def check_model_uri(model_uri: str):
  """Fails fast when a local model path does not exist."""
  if not model_uri:
    raise ValueError(
        'RunInference: model_uri is empty. Pass the path of a model file or '
        'directory (withModel in Java).')
  if '://' not in model_uri and not os.path.exists(model_uri):
    raise FileNotFoundError(
        f"RunInference: no model at '{model_uri}' (resolved to "
        f"'{os.path.abspath(model_uri)}' on the expansion service's machine). "
        'Check the path, or create the example models with ./xinfer setup.')


def check_batch_sizes(min_batch_size: int, max_batch_size: int):
  if min_batch_size < 1:
    raise ValueError(
        f'RunInference: min_batch_size must be at least 1, got {min_batch_size}.'
    )
  if max_batch_size < min_batch_size:
    raise ValueError(
        f'RunInference: max_batch_size ({max_batch_size}) must be at least '
        f'min_batch_size ({min_batch_size}).')


def check_function_path(path: str, what: str) -> Tuple[str, str]:
  """The module and name of ``package.module:function``, once the format is
  right and the operator allows the module (nothing is imported)."""
  module_name, sep, name = path.partition(':')
  if not sep or not module_name or not name:
    raise ValueError(
        f"RunInference: {what} '{path}' must be 'package.module:function'.")
  modules.check(module_name, what, path)
  return module_name, name


def import_function(path: str, what: str) -> Callable:
  """``package.module:function`` as a callable, imported only from an allowed
  module (``xinfer.modules``); the message says how to fix it."""
  module_name, name = check_function_path(path, what)
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(
        f"RunInference: cannot import module '{module_name}' for {what} "
        f"'{path}': {e}. Install the package that holds it into the Python "
        'worker venv (e.g. .venv/bin/pip install ./my-package).') from e
  try:
    fn = getattr(module, name)
  except AttributeError:
    raise AttributeError(
        f"RunInference: module '{module_name}' has no '{name}' ({what} "
        f"'{path}').") from None
  if not callable(fn):
    raise TypeError(f"RunInference: {what} '{path}' is not callable.")
  return fn


_SHA256 = re.compile(r'[0-9a-fA-F]{64}')


def check_sha256(model_sha256: str, model_uri: str,
                 refresh_interval_secs: Optional[float]) -> str:
  """The pinned digest in lower case; fails on a pin that cannot work."""
  if not _SHA256.fullmatch(model_sha256):
    raise ValueError(
        f"RunInference: model_sha256 {model_sha256!r} is not a sha256 digest "
        '(64 hex digits, e.g. from sha256sum MODEL_FILE).')
  if refresh_interval_secs is not None:
    raise ValueError(
        'RunInference: model_sha256 pins one file, but with model refresh the '
        'model is whichever version is newest; drop model_sha256 or '
        'refresh_interval_secs.')
  if '://' in model_uri:
    raise ValueError(
        f"RunInference: model_sha256 needs a local model file; '{model_uri}' "
        'is remote. Copy the model to the workers, or drop model_sha256.')
  if os.path.isdir(model_uri):
    raise ValueError(_directory_pin(model_uri))
  return model_sha256.lower()


def _directory_pin(path: str) -> str:
  return (f"RunInference: model_sha256 pins a single file, but '{path}' is a "
          'directory (a TensorFlow SavedModel?). Pin a single-file model '
          '(.keras, .pt, .joblib, .pkl, .onnx) or drop model_sha256.')


def verify_sha256(path: str, expected: str):
  """Raises ValueError unless the file at ``path`` has the sha256 ``expected``
  (lower-case hex)."""
  if os.path.isdir(path):
    raise ValueError(_directory_pin(path))
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  actual = digest.hexdigest()
  if actual != expected:
    raise ValueError(
        f"RunInference: the model file '{path}' has sha256 {actual}, but "
        f'model_sha256 is {expected}; it was not loaded. If the model was '
        'replaced on purpose, pin the new digest.')


def _natural_key(path: str):
  name = os.path.basename(path.rstrip('/'))
  return [(0, int(t), '') if t.isdigit() else (1, 0, t)
          for t in re.split(r'(\d+)', name)]


def latest_version(pattern: str) -> Optional[str]:
  """The newest model matching a glob pattern: the last in natural name order."""
  matches = [
      m for m in glob.glob(pattern) if not os.path.basename(m).startswith('.')
  ]
  return max(matches, key=_natural_key) if matches else None


def _name_of(path: str) -> str:
  return os.path.basename(path.rstrip('/'))


class _ModelSlot:
  """The loaded model of one handler in one worker, swapped on refresh."""
  def __init__(self, model: LoadedModel, version: str, model_id: str):
    self.model = model
    self.version = version
    self.model_id = model_id
    self.checked_at = time.monotonic()
    self.lock = threading.Lock()


class RowModelHandler(ModelHandler[Any, PredictionResult, _ModelSlot]):
  """Runs a model on batches of Rows; subclasses say how to load a model file.

  Args:
    model_uri: the model file or directory; with ``refresh_interval_secs``, a
      glob pattern whose newest match (natural name order) is the model.
    feature_field: the record field holding the model input.
    model_id: the id each prediction carries; defaults to the model's file name
      (with refresh: the loaded version's file name).
    preprocess: ``package.module:function`` taking a record (a Row) and returning
      its model input; replaces reading ``feature_field``.
    postprocess: ``package.module:function`` taking one record's model output (a
      numpy array) and returning its scores.
    nan_policy: ``reject`` (a record with NaN or infinite values fails in the
      conversion stage) or ``allow`` (it reaches the model).
    refresh_interval_secs: how often to look for a newer model version.
    model_sha256: the sha256 (hex) the model file must have; checked before
      each load, and a model file that differs is not loaded. Needs a single
      local file and no refresh.
    min_batch_size, max_batch_size, max_batch_wait_secs: Beam's batching.
  """

  # Whether the framework's model call takes keyword arguments (inference_args).
  accepts_inference_args = False

  def __init__(self,
               model_uri: str,
               *,
               feature_field: str,
               model_id: Optional[str] = None,
               preprocess: Optional[str] = None,
               postprocess: Optional[str] = None,
               nan_policy: str = convert.NAN_REJECT,
               refresh_interval_secs: Optional[float] = None,
               model_sha256: Optional[str] = None,
               min_batch_size: int = DEFAULT_MIN_BATCH_SIZE,
               max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
               max_batch_wait_secs: Optional[float] = None,
               **framework_options):
    super().__init__()
    check_batch_sizes(min_batch_size, max_batch_size)
    convert.check_nan_policy(nan_policy)
    if refresh_interval_secs is not None and refresh_interval_secs <= 0:
      raise ValueError(
          'RunInference: refresh_interval_secs must be positive, got '
          f'{refresh_interval_secs}.')
    if refresh_interval_secs is not None and model_id:
      raise ValueError(
          'RunInference: with model refresh each prediction carries the id of '
          "the version that made it (its file name); don't also set model_id.")
    if max_batch_wait_secs is not None and max_batch_wait_secs <= 0:
      raise ValueError(
          'RunInference: max_batch_wait_secs must be positive, got '
          f'{max_batch_wait_secs}.')
    if preprocess:
      check_function_path(preprocess, 'preprocess')
    if postprocess:
      check_function_path(postprocess, 'postprocess')
    self._model_sha256 = (None if model_sha256 is None else check_sha256(
        model_sha256, model_uri, refresh_interval_secs))
    self._model_uri = model_uri
    self._feature_field = feature_field
    self._model_id = model_id
    self._preprocess_path = preprocess
    self._postprocess_path = postprocess
    self._nan_policy = nan_policy
    self._refresh_interval_secs = refresh_interval_secs
    self._min_batch_size = min_batch_size
    self._max_batch_size = max_batch_size
    self._max_batch_wait_secs = max_batch_wait_secs
    self._options = framework_options
    self._check_options(framework_options)
    # Resolved on workers (the handler is pickled to them).
    self._preprocess_fn = None
    self._postprocess_fn = None
    self._counters = None

  # --- what a framework provides -------------------------------------------

  def _load(self, path: str) -> LoadedModel:
    """Loads the model at ``path``."""
    raise NotImplementedError(type(self))

  def _check_options(self, options: Dict[str, Any]):
    if options:
      raise ValueError(
          f"RunInference: unknown option(s) {', '.join(sorted(options))} for "
          f'{type(self).__name__}.')

  # --- the contract --------------------------------------------------------

  @property
  def model_id(self) -> str:
    return self._model_id or _name_of(self._model_uri)

  def check_model_exists(self):
    """Fails at construction when there is no model (or no version) to load."""
    if self._refresh_interval_secs is None:
      check_model_uri(self._model_uri)
    elif '://' not in self._model_uri and latest_version(
        self._model_uri) is None:
      raise FileNotFoundError(
          f"RunInference: nothing matches the model pattern '{self._model_uri}'"
          '. With model refresh, the model URI is a glob pattern of versions '
          "(e.g. '/models/digits/v*'); put the first version there.")

  def load_model(self) -> _ModelSlot:
    self._resolve_hooks()
    if self._refresh_interval_secs is None:
      check_model_uri(self._model_uri)
      if self._model_sha256:
        verify_sha256(self._model_uri, self._model_sha256)
      return _ModelSlot(self._load(self._model_uri), self._model_uri,
                        self.model_id)
    version = latest_version(self._model_uri)
    if version is None:
      self.check_model_exists()
    return _ModelSlot(self._load(version), version, _name_of(version))

  def run_inference(
      self,
      batch: Sequence[Any],
      model: _ModelSlot,
      inference_args: Optional[Dict[str, Any]] = None
  ) -> Sequence[PredictionResult]:
    self._resolve_hooks()
    self._maybe_refresh(model)
    loaded, model_id = model.model, model.model_id
    kwargs = inference_args or {}
    outcomes: List[Any] = [None] * len(batch)
    inputs: List[Tuple[int, np.ndarray]] = []
    for i, row in enumerate(batch):
      stage = PREPROCESSING
      try:
        values = (self._preprocess_fn(row) if self._preprocess_fn else getattr(
            row, self._feature_field, None))
        stage = CONVERSION
        inputs.append(
            (i,
             convert.to_model_input(values, row, self._feature_field,
                                    loaded.input_shape, loaded.input_dtype,
                                    self._nan_policy)))
      except Exception as e:  # pylint: disable=broad-except
        outcomes[i] = Failure.of(stage, e)
    for i, output in self._predict(loaded, inputs, kwargs):
      outcomes[i] = output
    results = []
    for row, outcome in zip(batch, outcomes):
      if not isinstance(outcome, Failure) and self._postprocess_fn:
        try:
          outcome = np.asarray(self._postprocess_fn(outcome))
        except Exception as e:  # pylint: disable=broad-except
          outcome = Failure.of(POSTPROCESSING, e)
      results.append(
          PredictionResult(example=row, inference=outcome, model_id=model_id))
    self._count(results)
    return results

  def run_block(
      self,
      features: np.ndarray,
      model: _ModelSlot,
      inference_args: Optional[Dict[str, Any]] = None
  ) -> Optional[Tuple[np.ndarray, str]]:
    """The model's outputs for a block of records at once (``features``: one
    row per record) and the model id, or None when the block must go record by
    record through ``run_inference`` (a size the model does not take, a value
    the NaN policy rejects, a batch the model refuses, or hooks)."""
    if self._preprocess_path or self._postprocess_path:
      return None
    self._maybe_refresh(model)
    loaded, model_id = model.model, model.model_id
    expected = convert.expected_size(loaded.input_shape)
    if expected is not None and features.shape[1] != expected:
      return None
    if (self._nan_policy == convert.NAN_REJECT and features.dtype.kind == 'f'
        and not np.isfinite(features).all()):
      return None
    x = features.astype(loaded.input_dtype, copy=False)
    if expected is not None and len(loaded.input_shape) != 2:
      x = x.reshape((len(x), ) + tuple(loaded.input_shape[1:]))
    try:
      return self._call(loaded, x, inference_args or {}, len(x)), model_id
    except Exception:  # pylint: disable=broad-except
      return None

  def validate_inference_args(self, inference_args: Optional[Dict[str, Any]]):
    if inference_args and not self.accepts_inference_args:
      raise ValueError(
          f'RunInference: inference_args {sorted(inference_args)} were given, '
          f'but {type(self).__name__} models take no extra arguments '
          '(PyTorch modules, Keras files and scikit-learn models do).')

  def get_num_bytes(self, batch: Sequence[Any]) -> int:
    return sum(
        len(getattr(row, self._feature_field, None) or ()) * 4 for row in batch)

  def get_metrics_namespace(self) -> str:
    return METRICS_NAMESPACE

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    kwargs = {
        'min_batch_size': self._min_batch_size,
        'max_batch_size': self._max_batch_size,
    }
    if self._max_batch_wait_secs is not None:
      kwargs['max_batch_duration_secs'] = self._max_batch_wait_secs
    return kwargs

  # --- helpers ---------------------------------------------------------------

  def _resolve_hooks(self):
    if self._preprocess_path and self._preprocess_fn is None:
      self._preprocess_fn = import_function(self._preprocess_path, 'preprocess')
    if self._postprocess_path and self._postprocess_fn is None:
      self._postprocess_fn = import_function(self._postprocess_path,
                                             'postprocess')

  def _predict(self, loaded: LoadedModel, inputs: List[Tuple[int, np.ndarray]],
               kwargs: Dict[str, Any]):
    """(index, output or Failure) for each input: the batch at once, or one
    record at a time when the model rejects the batch."""
    if not inputs:
      return []
    try:
      stacked = np.stack([x for _, x in inputs])
      outputs = self._call(loaded, stacked, kwargs, len(inputs))
      return [(i, out) for (i, _), out in zip(inputs, outputs)]
    except Exception as batch_error:  # pylint: disable=broad-except
      if len(inputs) == 1:
        return [(inputs[0][0], Failure.of(INFERENCE, batch_error))]
    results = []
    for i, x in inputs:
      try:
        results.append((i, self._call(loaded, x[np.newaxis], kwargs, 1)[0]))
      except Exception as e:  # pylint: disable=broad-except
        results.append((i, Failure.of(INFERENCE, e)))
    return results

  def _call(self, loaded: LoadedModel, x: np.ndarray, kwargs, n: int):
    outputs = np.asarray(loaded.predict(x, **kwargs))
    if outputs.shape[:1] != (n, ):
      raise ValueError(
          f'RunInference: the model returned shape {outputs.shape} for a batch '
          f'of {n}; it must return one output per record (batch dimension '
          'first).')
    return outputs

  def _maybe_refresh(self, slot: _ModelSlot):
    if self._refresh_interval_secs is None:
      return
    now = time.monotonic()
    if now - slot.checked_at < self._refresh_interval_secs:
      return
    with slot.lock:
      if now - slot.checked_at < self._refresh_interval_secs:
        return
      slot.checked_at = now
      version = latest_version(self._model_uri)
      if version is None or version == slot.version:
        return
      started = time.monotonic()
      try:
        model = self._load(version)
      except Exception as e:  # pylint: disable=broad-except
        # A half-written version must not stop the job: keep serving the current
        # model and try again at the next interval.
        _LOG.warning(
            'RunInference: could not load new model version %s (%s: %s); '
            'still serving %s.', version,
            type(e).__name__, e, slot.version)
        return
      slot.model, slot.version, slot.model_id = (model, version,
                                                 _name_of(version))
      Metrics.counter(METRICS_NAMESPACE, 'model_refreshes').inc()
      Metrics.distribution(METRICS_NAMESPACE,
                           'refresh_load_latency_milli_secs').update(
                               int((time.monotonic() - started) * 1000))
      _LOG.info('RunInference: now serving model version %s', version)

  def _count(self, results: Sequence[PredictionResult]):
    if self._counters is None:
      self._counters = {
          stage: Metrics.counter(METRICS_NAMESPACE, f'failed_{stage}')
          for stage in (PREPROCESSING, CONVERSION, INFERENCE, POSTPROCESSING)
      }
    for result in results:
      if isinstance(result.inference, Failure):
        self._counters[result.inference.stage].inc()


class TensorFlowRowHandler(RowModelHandler):
  """TensorFlow: a SavedModel directory (its ``serving_default`` signature) or a
  Keras ``.keras`` file.

  SavedModels load with ``tf.saved_model.load``, so models exported by current
  TensorFlow and Keras 3 (``model.export``) work; Beam's own TF handler loads them
  through ``tf.keras.models.load_model``, which Keras 3 refuses. Keras files take
  inference_args (keyword arguments of the model call); SavedModel signatures do
  not.
  """
  accepts_inference_args = True

  def validate_inference_args(self, inference_args):
    if inference_args and not self._model_uri.endswith('.keras'):
      raise ValueError(
          f'RunInference: inference_args {sorted(inference_args)} were given, '
          'but a SavedModel signature takes only its input tensor. Use a .keras '
          'file, or drop the inference args.')

  def _load(self, path: str) -> LoadedModel:
    import tensorflow as tf
    if path.endswith('.keras'):
      import keras
      model = keras.models.load_model(path)
      shape = tuple(model.inputs[0].shape)
      return LoadedModel(
          lambda x, **kw: np.asarray(model(x, training=False, **kw)), shape,
          np.float32)
    loaded = tf.saved_model.load(path)
    signatures = getattr(loaded, 'signatures', {})
    if 'serving_default' not in signatures:
      raise ValueError(
          f"RunInference: the SavedModel at '{path}' has no "
          f"'serving_default' signature (it has: {', '.join(signatures) or 'none'})."
          ' Export it with model.export(path) or tf.saved_model.save(..., '
          'signatures=...).')
    signature = signatures['serving_default']
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
      raise ValueError(
          f"RunInference: the SavedModel at '{path}' has inputs "
          f'{sorted(inputs)} and outputs {sorted(outputs)}; xinfer runs models '
          'with one input and one output.')
    input_name, spec = next(iter(inputs.items()))
    output_name = next(iter(outputs))
    dtype = spec.dtype.as_numpy_dtype

    def predict(x):
      result = signature(**{input_name: tf.constant(x, dtype=spec.dtype)})
      return result[output_name].numpy()

    # Keep the loaded object alive: the signature does not hold it.
    predict.saved_model = loaded
    return LoadedModel(predict, tuple(spec.shape.as_list()), dtype)


class PyTorchRowHandler(RowModelHandler):
  """PyTorch: a TorchScript file, or a state dict with the model class named.

  Args (beyond RowModelHandler's):
    model_class: ``package.module:ClassName`` of an ``nn.Module`` subclass, in
      a module the operator allowed (``xinfer.modules``); when given, the file
      is a state dict (``torch.save(model.state_dict(), path)``) loaded into
      ``ClassName(**model_params)``. Without it, the file is TorchScript
      (``torch.jit.save``).
    model_params: keyword arguments for the class's constructor.

  inference_args are keyword arguments of the module's ``forward``. The input
  size is not recorded in PyTorch files: a record of the wrong size fails in the
  inference stage with PyTorch's message, and the rest of the batch still runs.
  """
  accepts_inference_args = True

  def _check_options(self, options):
    unknown = set(options) - {'model_class', 'model_params'}
    if unknown:
      super()._check_options({k: options[k] for k in unknown})
    if options.get('model_params') and not options.get('model_class'):
      raise ValueError(
          'RunInference: model_params were given without model_class; name the '
          "module's class (e.g. 'my_models.nets:DigitsNet').")
    if options.get('model_class'):
      # Fails fast; the class is resolved again on each worker, by name, so the
      # pickled handler holds only the (checked) name.
      self._module_class()

  def _module_class(self):
    from torch import nn
    path = self._options['model_class']
    cls = import_function(path, 'model_class')
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
      raise TypeError(
          f"RunInference: model_class '{path}' is {cls!r}; it must be an "
          'nn.Module subclass (torch.nn.Module).')
    return cls

  def _load(self, path: str) -> LoadedModel:
    import torch
    if self._options.get('model_class'):
      cls = self._module_class()
      module = cls(**(self._options.get('model_params') or {}))
      module.load_state_dict(
          torch.load(path, map_location='cpu', weights_only=True))
    else:
      try:
        module = torch.jit.load(path, map_location='cpu')
      except RuntimeError as e:
        raise ValueError(
            f"RunInference: '{path}' is not a TorchScript file ({e}). For a "
            'state dict, also name the model class (withModelClass in Java).'
        ) from e
    module.eval()

    def predict(x, **kwargs):
      with torch.no_grad():
        out = module(torch.from_numpy(x), **kwargs)
      if isinstance(out, (tuple, list)):
        out = out[0]
      return out.detach().cpu().numpy()

    return LoadedModel(predict, None, np.float32)


class SklearnRowHandler(RowModelHandler):
  """scikit-learn: a model saved with joblib (``.joblib``) or pickle (``.pkl``).

  Classifiers give ``predict_proba`` as scores; other models (regressors) give
  ``predict``, one score per record. inference_args are keyword arguments of
  that call. Only load model files you trust: unpickling runs code (pin the
  file with ``model_sha256``).
  """
  accepts_inference_args = True

  def _load(self, path: str) -> LoadedModel:
    if path.endswith(('.pkl', '.pickle')):
      import pickle
      with open(path, 'rb') as f:
        model = pickle.load(f)
    else:
      import joblib
      model = joblib.load(path)
    method = getattr(model, 'predict_proba', None) or model.predict
    n = getattr(model, 'n_features_in_', None)

    def predict(x, **kwargs):
      out = np.asarray(method(x, **kwargs))
      return out.reshape(len(x), -1)

    return LoadedModel(predict, (None, n), np.float64)


class OnnxRowHandler(RowModelHandler):
  """ONNX: an ``.onnx`` file run by onnxruntime on CPU.

  The model's first input takes the batch; the scores are its first float tensor
  output (for a converted scikit-learn classifier, the probabilities: convert
  with ``options={'zipmap': False}``).
  """
  _DTYPES = {
      'tensor(float)': np.float32,
      'tensor(double)': np.float64,
      'tensor(int64)': np.int64,
      'tensor(int32)': np.int32,
  }

  def _load(self, path: str) -> LoadedModel:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    # One thread per worker process: the worker pool runs one process per core.
    options.intra_op_num_threads = int(
        os.environ.get('XINFER_ONNX_THREADS', '1'))
    session = onnxruntime.InferenceSession(path,
                                           sess_options=options,
                                           providers=['CPUExecutionProvider'])
    model_input = session.get_inputs()[0]
    floats = [
        o for o in session.get_outputs()
        if o.type in ('tensor(float)', 'tensor(double)')
    ]
    if not floats:
      raise ValueError(
          f"RunInference: the ONNX model '{path}' has no float tensor output "
          f"(outputs: {[(o.name, o.type) for o in session.get_outputs()]}). "
          "For a scikit-learn classifier, convert with options={'zipmap': False}."
      )
    output_name = floats[0].name
    dtype = self._DTYPES.get(model_input.type)
    if dtype is None:
      raise ValueError(
          f"RunInference: the ONNX model '{path}' takes {model_input.type}; "
          'xinfer feeds numeric tensors (float, double, int32, int64).')
    shape = [d if isinstance(d, int) else None for d in model_input.shape]

    def predict(x):
      return session.run([output_name], {model_input.name: x})[0]

    return LoadedModel(predict, shape, dtype)


FRAMEWORKS: Dict[str, Callable[..., RowModelHandler]] = {
    'tensorflow': TensorFlowRowHandler,
    'pytorch': PyTorchRowHandler,
    'sklearn': SklearnRowHandler,
    'onnx': OnnxRowHandler,
}

_SUFFIXES = (
    (('.keras', ), 'tensorflow'),
    (('.pt', '.pth', '.ts'), 'pytorch'),
    (('.joblib', '.pkl', '.pickle'), 'sklearn'),
    (('.onnx', ), 'onnx'),
)


def detect_framework(model_uri: str) -> str:
  """The framework of a model file from its name (a directory is a SavedModel)."""
  name = model_uri.rstrip('/').lower()
  for suffixes, framework in _SUFFIXES:
    if name.endswith(suffixes):
      return framework
  if os.path.isdir(model_uri) and os.path.exists(
      os.path.join(model_uri, 'saved_model.pb')):
    return 'tensorflow'
  if any(c in model_uri for c in '*?[') or '://' in model_uri:
    version = latest_version(model_uri) if '://' not in model_uri else None
    if version and version != model_uri:
      return detect_framework(version)
  raise ValueError(
      f"RunInference: cannot tell the framework of '{model_uri}' from its name "
      "(known: a SavedModel directory, .keras, .pt/.pth/.ts, .joblib/.pkl, "
      f".onnx). Name it: framework= one of {', '.join(sorted(FRAMEWORKS))} "
      '(withFramework in Java).')


def create_handler(framework: Optional[str], model_uri: str,
                   **kwargs) -> RowModelHandler:
  """The model-handler factory: a handler for a framework from plain arguments.

  ``framework=None`` detects it from the model's name.
  """
  if not framework:
    if not any(c in model_uri for c in '*?['):
      check_model_uri(model_uri)
    framework = detect_framework(model_uri)
  try:
    handler_class = FRAMEWORKS[framework]
  except KeyError:
    raise ValueError(
        f"RunInference: unknown framework '{framework}'; xinfer supports "
        f"{', '.join(sorted(FRAMEWORKS))}.") from None
  return handler_class(model_uri, **kwargs)


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
                         'keyed_load_model_latency_milli_secs').update(
                             int((time.monotonic() - started) * 1000))
    with self._lock:
      self._slots[model_key] = slot
      self._slots.move_to_end(model_key)
      while self._capacity and len(self._slots) > self._capacity:
        evicted, _ = self._slots.popitem(last=False)
        Metrics.counter(METRICS_NAMESPACE, 'model_evictions').inc()
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
