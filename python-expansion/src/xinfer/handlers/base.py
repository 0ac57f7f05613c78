"""What every xinfer model handler shares: Beam's contract, failures per record, hooks.

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
from xinfer import deadlines
from xinfer import metrics
from xinfer import modules
from xinfer.handlers.versions import latest_version
from xinfer.handlers.versions import name_of

_LOG = logging.getLogger(__name__)

DEFAULT_MIN_BATCH_SIZE = 1
DEFAULT_MAX_BATCH_SIZE = 256
METRICS_NAMESPACE = metrics.NAMESPACE

# The stages a record can fail in, as reported in the dead-letter output.
PREPROCESSING, CONVERSION, INFERENCE, POSTPROCESSING = metrics.STAGES


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

  ``predict(x, **inference_args)`` takes a batch (batch dimension first):
  one array, or with named inputs a dict of them by input name; it returns
  the batch's outputs: an array, a dict of arrays by output name, or a tuple
  of arrays (see ``convert.per_record``). ``input_shape`` includes the batch
  dimension; ``None`` marks a dimension the model does not fix (a ``None``
  shape: the model file does not say). ``inputs`` gives the shape and dtype
  of each named input the model file describes. With ``stacked=False``,
  ``predict`` takes a list of per-record inputs and returns a list of
  per-record outputs (Beam ModelHandlers, Hugging Face pipelines).
  """
  def __init__(self,
               predict: Callable[..., Any],
               input_shape: Optional[Sequence[Optional[int]]],
               input_dtype=np.float32,
               *,
               inputs: Optional[Dict[str,
                                     Tuple[Optional[Sequence[Optional[int]]],
                                           Any]]] = None,
               stacked: bool = True):
    self.predict = predict
    self.input_shape = None if input_shape is None else tuple(input_shape)
    self.input_dtype = input_dtype
    self.inputs = dict(inputs or {})
    self.stacked = stacked

  def input_of(self, name: str):
    """(shape with batch dimension, dtype) of a named input, where the model
    file says; (None, None) otherwise."""
    return self.inputs.get(name, (None, None))


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


CPU = 'cpu'
_CUDA = re.compile(r'cuda(:\d+)?')


def check_device(device: str, handler_class) -> str:
  """The device, once the framework can use it (``cpu``, ``cuda``, ``cuda:N``)."""
  if device == CPU:
    return device
  if not _CUDA.fullmatch(device or ''):
    raise ValueError(
        f"RunInference: device '{device}' is not cpu, cuda or cuda:N "
        '(withDevice in Java).')
  if not handler_class.gpu:
    raise ValueError(
        f"RunInference: {handler_class.__name__} runs on the CPU only; device "
        f"'{device}' cannot be used. Drop withDevice, or export the model to "
        'ONNX or PyTorch.')
  return device


def require_cuda(device: str, available: bool, framework: str):
  """Fails the load (each record then fails with the reason) when the worker
  has no such CUDA device."""
  if device != CPU and not available:
    raise RuntimeError(
        f"RunInference: device '{device}' was asked for, but {framework} sees "
        'no CUDA device on this worker. Run the workers on a GPU host, or drop '
        'withDevice to run on the CPU.')


# The version of a slot whose model could not be loaded.
_UNLOADED = '<not loaded>'

# Seconds between attempts to load a model that failed to load on a worker.
LOAD_RETRY_SECS = 30.0


class ModelLoadError(RuntimeError):
  """The model could not be loaded on this worker: each record fails with it."""


def _unloadable(error: BaseException, what: str) -> LoadedModel:
  message = (f'RunInference: the model {what} could not be loaded on this '
             f'worker ({type(error).__name__}: {error}); its records fail '
             f'until a load succeeds (tried again every {LOAD_RETRY_SECS:g} s, '
             'or at the next model refresh).')

  def predict(x, **unused):
    raise ModelLoadError(message)

  return LoadedModel(predict, None)


class Serving(NamedTuple):
  """What a handler serves: one model with the version and id it came from,
  replaced as a whole on refresh, so that a batch read once scores with one
  model and names that model."""
  model: LoadedModel
  version: str
  model_id: str


class _ModelSlot:
  """The loaded model of one handler in one worker, swapped on refresh."""
  def __init__(self, model: LoadedModel, version: str, model_id: str):
    # One reference: a reader takes ``serving`` once and gets a consistent
    # (model, version, id) however a refresh interleaves.
    self.serving = Serving(model, version, model_id)
    self.checked_at = time.monotonic()
    self.lock = threading.Lock()
    # Set when no model could be loaded: ``model`` then fails each record.
    self.unloaded = False

  @property
  def model(self) -> LoadedModel:
    return self.serving.model

  @property
  def version(self) -> str:
    return self.serving.version

  @property
  def model_id(self) -> str:
    return self.serving.model_id


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
    inputs: named model inputs, each from a field of its own: a list of
      ``{"name", "field", "shape"?}`` (``convert.InputSpec``); replaces
      ``feature_field``. Their dtypes follow from the fields' types (see
      :meth:`bind_schema`).
    device: where the model runs: ``cpu`` (the default), or ``cuda`` /
      ``cuda:N`` for frameworks with ``gpu = True`` (PyTorch, TensorFlow,
      ONNX Runtime's CUDA provider, XGBoost, Hugging Face). A worker with no
      such device fails each record with the reason.
    outputs: declared outputs: a list of ``{"name", "type"}``
      (``convert.OutputSpec``); each prediction then carries these fields, by
      the model's output names (or in order, for a model that returns a
      tuple), instead of ``scores`` and ``predicted_class``.
  """

  # Whether the framework's model call takes keyword arguments (inference_args).
  accepts_inference_args = False
  # Whether the framework can run the model on a CUDA device (``device``).
  gpu = False

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
               bundle_timeout_secs: Optional[float] = None,
               inputs: Optional[Sequence[Dict[str, Any]]] = None,
               outputs: Optional[Sequence[Dict[str, Any]]] = None,
               device: str = CPU,
               **framework_options):
    super().__init__()
    self._device = check_device(device, type(self))
    self._inputs = convert.parse_inputs(inputs)
    self._outputs = convert.parse_outputs(outputs)
    if self._inputs and preprocess:
      raise ValueError(
          'RunInference: a preprocess function makes the model input from the '
          'whole record; drop the named inputs (withInput), or return a dict '
          'of them by input name from the function.')
    check_batch_sizes(min_batch_size, max_batch_size)
    deadlines.check_limit(bundle_timeout_secs)
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
    self._bundle_timeout_secs = bundle_timeout_secs
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

  def bind_schema(self, fields: Sequence[Tuple[str, Any]]):
    """Takes the input's schema fields: named inputs get their fields' types,
    declared outputs are checked against the input's names. Fails at
    construction with what to fix."""
    if self._inputs:
      self._inputs = convert.bind_inputs(fields, self._inputs)
    if self._outputs:
      convert.check_output_fields(fields, self._outputs)

  def check_signature(self, path: str, input_names: Sequence[str],
                      output_names: Optional[Sequence[str]]):
    """For a framework whose model file names its inputs and outputs: fails
    the load (so each record fails with the reason) when a named input is
    not one of the model's, a model input gets nothing, or a declared output
    is not one of the model's."""
    if self._inputs:
      declared = [spec.name for spec in self._inputs]
      unknown = [n for n in declared if n not in input_names]
      unfed = [n for n in input_names if n not in declared]
      if unknown or unfed:
        raise ValueError(
            f"RunInference: the model '{path}' has inputs "
            f"{', '.join(input_names)}; withInput names "
            f"{', '.join(declared)}. Name each of the model's inputs once.")
    if self._outputs and output_names is not None:
      unknown = [s.name for s in self._outputs if s.name not in output_names]
      if unknown:
        raise ValueError(f"RunInference: the model '{path}' has outputs "
                         f"{', '.join(output_names)}; withOutput names "
                         f"{', '.join(unknown)}, which it does not have.")

  @property
  def outputs(self) -> Tuple['convert.OutputSpec', ...]:
    return self._outputs

  @property
  def named_inputs(self) -> Tuple['convert.InputSpec', ...]:
    return self._inputs

  # --- the contract --------------------------------------------------------

  @property
  def model_id(self) -> str:
    return self._model_id or name_of(self._model_uri)

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
    """The model to serve. One that fails to load (a corrupt file, a digest
    that does not match) does not fail the worker: every record of its
    batches fails with the reason (a dead letter, with ``withFailures``), and
    the load is tried again (``LOAD_RETRY_SECS``, or the next refresh)."""
    self._resolve_hooks()
    try:
      return self._load_slot()
    except Exception as e:  # pylint: disable=broad-except
      _LOG.error(
          'RunInference: could not load the model %s (%s: %s); its records '
          'fail until a load succeeds.', self._model_uri,
          type(e).__name__, e)
      slot = _ModelSlot(_unloadable(e, self._model_uri), _UNLOADED,
                        self._model_id or name_of(self._model_uri))
      slot.unloaded = True
      return slot

  def _load_slot(self) -> _ModelSlot:
    if self._refresh_interval_secs is None:
      self.check_model_exists()
      if self._model_sha256:
        verify_sha256(self._model_uri, self._model_sha256)
      return _ModelSlot(self._load(self._model_uri), self._model_uri,
                        self.model_id)
    version = latest_version(self._model_uri)
    if version is None:
      self.check_model_exists()
    return _ModelSlot(self._load(version), version, name_of(version))

  def run_inference(
      self,
      batch: Sequence[Any],
      model: _ModelSlot,
      inference_args: Optional[Dict[str, Any]] = None
  ) -> Sequence[PredictionResult]:
    self._resolve_hooks()
    self._maybe_refresh(model)
    loaded, _, model_id = model.serving
    kwargs = inference_args or {}
    outcomes: List[Any] = [None] * len(batch)
    inputs: List[Tuple[int, np.ndarray]] = []
    results = []
    with deadlines.batch(model_id, self._bundle_timeout_secs,
                         PREPROCESSING) as deadline:
      for i, row in enumerate(batch):
        stage = PREPROCESSING
        deadline.stage = stage
        try:
          if self._inputs:
            stage = CONVERSION
            deadline.stage = stage
            inputs.append((i, self._named_inputs_of(row, loaded)))
            continue
          values = (self._preprocess_fn(row) if self._preprocess_fn else
                    getattr(row, self._feature_field, None))
          stage = CONVERSION
          deadline.stage = stage
          inputs.append((i, self._model_input_of(values, row, loaded)))
        except Exception as e:  # pylint: disable=broad-except
          outcomes[i] = Failure.of(stage, e)
      deadline.stage = INFERENCE
      for i, output in self._predict(loaded, inputs, kwargs):
        outcomes[i] = output
      deadline.stage = POSTPROCESSING
      for row, outcome in zip(batch, outcomes):
        if not isinstance(outcome, Failure):
          outcome = self._finish(outcome)
        results.append(
            PredictionResult(example=row, inference=outcome, model_id=model_id))
    self._count(results)
    return results

  def _named_inputs_of(self, row, loaded: LoadedModel) -> Dict[str, Any]:
    return {
        spec.name: convert.to_named_input(row, spec,
                                          *loaded.input_of(spec.name),
                                          self._nan_policy)
        for spec in self._inputs
    }

  def _model_input_of(self, values, row, loaded: LoadedModel):
    """One record's input in the single-input form (a preprocess function may
    also return text, or a dict of inputs by name)."""
    if isinstance(values, dict):
      return {
          name: v if isinstance(v, (str, bytes)) else np.asarray(v)
          for name, v in values.items()
      }
    if self._preprocess_fn and isinstance(values, (str, bytes)):
      return values
    return convert.to_model_input(values, row, self._feature_field,
                                  loaded.input_shape, loaded.input_dtype,
                                  self._nan_policy)

  def _finish(self, output):
    """One record's model output, through the postprocess function, as its
    declared outputs (a dict) or its scores; a Failure when it does not fit."""
    stage = POSTPROCESSING
    try:
      if self._postprocess_fn:
        output = self._postprocess_fn(output)
        if not self._outputs and not isinstance(output, (dict, tuple)):
          output = np.asarray(output)
      if self._outputs:
        return convert.output_values(output, self._outputs)
      return convert.default_scores(output)
    except Exception as e:  # pylint: disable=broad-except
      return Failure.of(stage, e)

  def run_block(
      self,
      tensors: Mapping[str, np.ndarray],
      model: _ModelSlot,
      inference_args: Optional[Dict[str,
                                    Any]] = None) -> Optional[Tuple[Any, str]]:
    """The model's outputs for a block of records at once, and the model id;
    or None when the block must go record by record through
    ``run_inference`` (hooks, a model that takes a list of records, a record
    that would fail conversion: a size or shape the model does not take, a
    value the NaN policy rejects; a batch the model refuses, an output that
    does not fit).

    ``tensors`` holds the model inputs' Row fields by name, each the block's
    records as one array, batch first: the feature field, or the field of
    each named input. The outputs are the declared outputs, a dict of arrays
    of the declared types by name, or else the scores; batch first.
    """
    if self._preprocess_path or self._postprocess_path:
      return None
    self._maybe_refresh(model)
    loaded, _, model_id = model.serving
    if not loaded.stacked:
      return None
    if self._inputs:
      x = {}
      for spec in self._inputs:
        value = convert.block_input(tensors[spec.field], spec,
                                    *loaded.input_of(spec.name),
                                    self._nan_policy)
        if value is None:
          return None
        x[spec.name] = value
      n = len(next(iter(x.values())))
    else:
      x = convert.block_features(tensors[self._feature_field],
                                 loaded.input_shape, loaded.input_dtype,
                                 self._nan_policy)
      if x is None:
        return None
      n = len(x)
    try:
      with deadlines.batch(model_id, self._bundle_timeout_secs, INFERENCE):
        outputs = loaded.predict(x, **(inference_args or {}))
    except Exception:  # pylint: disable=broad-except
      return None
    if self._outputs:
      result = convert.block_outputs(outputs, self._outputs, n)
    else:
      result = convert.block_scores(outputs, n)
    return None if result is None else (result, model_id)

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
      outputs = self._call(loaded, [x for _, x in inputs], kwargs)
      return [(i, out) for (i, _), out in zip(inputs, outputs)]
    except Exception as batch_error:  # pylint: disable=broad-except
      if len(inputs) == 1:
        return [(inputs[0][0], Failure.of(INFERENCE, batch_error))]
    results = []
    for i, x in inputs:
      try:
        results.append((i, self._call(loaded, [x], kwargs)[0]))
      except Exception as e:  # pylint: disable=broad-except
        results.append((i, Failure.of(INFERENCE, e)))
    return results

  def _call(self, loaded: LoadedModel, inputs: List[Any], kwargs) -> List[Any]:
    """The model's output for each of ``inputs`` (per-record model inputs)."""
    n = len(inputs)
    if not loaded.stacked:
      outputs = list(loaded.predict(inputs, **kwargs))
      if len(outputs) != n:
        raise ValueError(
            f'RunInference: the model returned {len(outputs)} outputs for a '
            f'batch of {n}; it must return one per record.')
      return outputs
    return convert.per_record(loaded.predict(convert.stack(inputs), **kwargs),
                              n)

  def _maybe_refresh(self, slot: _ModelSlot):
    if slot.unloaded:
      self._retry_load(slot)
      return
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
      slot.serving = Serving(model, version, name_of(version))
      Metrics.counter(METRICS_NAMESPACE, metrics.MODEL_REFRESHES).inc()
      Metrics.distribution(METRICS_NAMESPACE,
                           metrics.REFRESH_LOAD_LATENCY_MILLIS).update(
                               int((time.monotonic() - started) * 1000))
      _LOG.info('RunInference: now serving model version %s', version)

  def _retry_load(self, slot: _ModelSlot):
    interval = min(LOAD_RETRY_SECS, self._refresh_interval_secs
                   or LOAD_RETRY_SECS)
    if time.monotonic() - slot.checked_at < interval:
      return
    with slot.lock:
      if not slot.unloaded or time.monotonic() - slot.checked_at < interval:
        return
      slot.checked_at = time.monotonic()
      try:
        loaded = self._load_slot()
      except Exception as e:  # pylint: disable=broad-except
        _LOG.warning('RunInference: the model %s still does not load (%s: %s).',
                     self._model_uri,
                     type(e).__name__, e)
        return
      slot.serving = loaded.serving
      slot.unloaded = False
      _LOG.info('RunInference: the model %s loaded; serving %s',
                self._model_uri, loaded.version)

  def _count(self, results: Sequence[PredictionResult]):
    if self._counters is None:
      self._counters = {
          stage: Metrics.counter(METRICS_NAMESPACE, metrics.failed(stage))
          for stage in (PREPROCESSING, CONVERSION, INFERENCE, POSTPROCESSING)
      }
    for result in results:
      if isinstance(result.inference, Failure):
        self._counters[result.inference.stage].inc()
