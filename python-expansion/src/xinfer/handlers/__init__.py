"""Model handlers built from plain arguments, so Java can name them.

One module per framework (``tensorflow_inference``, ``pytorch_inference``,
``sklearn_inference``, ``onnx_inference``, ``xgboost_inference``,
``huggingface_inference``, and
``beam_handler`` for a Beam ModelHandler of your own), each a small subclass of
:class:`RowModelHandler` (``base``) that only says how to load a model file;
``keyed`` picks a model per key; ``versions`` finds the newest model version for
refresh. This module is the registry: :func:`create_handler` builds the handler
for a framework, named or detected from the model's file name.

Adding a framework is one file here (a ``RowModelHandler`` subclass with
``_load``, and the module's ``FRAMEWORK``, ``HANDLER`` and ``SUFFIXES``) and
one entry in ``_FRAMEWORK_MODULES`` below.

Usage::

  from xinfer import handlers
  handler = handlers.create_handler(None, '/models/digits-mlp',
                                    feature_field='features',
                                    max_batch_size=256)
  # a Beam ModelHandler: apache_beam.ml.inference.base.RunInference(handler)
"""

import importlib
import os
from typing import Callable, Dict, Optional, Tuple

from xinfer.handlers.base import CONVERSION
from xinfer.handlers.base import DEFAULT_MAX_BATCH_SIZE
from xinfer.handlers.base import DEFAULT_MIN_BATCH_SIZE
from xinfer.handlers.base import Failure
from xinfer.handlers.base import INFERENCE
from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import METRICS_NAMESPACE
from xinfer.handlers.base import POSTPROCESSING
from xinfer.handlers.base import PREPROCESSING
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import check_model_uri
from xinfer.handlers.base import import_function
from xinfer.handlers.base import verify_sha256
from xinfer.handlers.keyed import KeyedRowModelHandler
from xinfer.handlers.onnx_inference import OnnxRowHandler
from xinfer.handlers.pytorch_inference import PyTorchRowHandler
from xinfer.handlers.sklearn_inference import SklearnRowHandler
from xinfer.handlers.tensorflow_inference import TensorFlowRowHandler
from xinfer.handlers.versions import latest_version

# The frameworks, in the order their file suffixes are tried.
_FRAMEWORK_MODULES = (
    'tensorflow_inference',
    'pytorch_inference',
    'sklearn_inference',
    'onnx_inference',
    'xgboost_inference',
    'huggingface_inference',
    'beam_handler',
)


def _registry():
  frameworks, suffixes = {}, []
  for name in _FRAMEWORK_MODULES:
    module = importlib.import_module(f'{__name__}.{name}')
    frameworks[module.FRAMEWORK] = module.HANDLER
    suffixes.append((module.SUFFIXES, module.FRAMEWORK))
  return frameworks, tuple(suffixes)


FRAMEWORKS: Dict[str, Callable[..., RowModelHandler]]
_SUFFIXES: Tuple[Tuple[Tuple[str, ...], str], ...]
FRAMEWORKS, _SUFFIXES = _registry()


def detect_framework(model_uri: str) -> str:
  """The framework of a model file from its name (a directory is a SavedModel)."""
  name = model_uri.rstrip('/').lower()
  for suffixes, framework in _SUFFIXES:
    if name.endswith(suffixes):
      return framework
  if os.path.isdir(model_uri) and os.path.exists(
      os.path.join(model_uri, 'saved_model.pb')):
    return 'tensorflow'
  if os.path.isdir(model_uri) and os.path.exists(
      os.path.join(model_uri, 'config.json')):
    return 'huggingface'
  if any(c in model_uri for c in '*?[') or '://' in model_uri:
    version = latest_version(model_uri) if '://' not in model_uri else None
    if version and version != model_uri:
      return detect_framework(version)
  raise ValueError(
      f"RunInference: cannot tell the framework of '{model_uri}' from its name "
      "(known: a SavedModel directory, a Hugging Face directory with "
      'config.json, .keras, .pt/.pth/.ts, .joblib/.pkl, .onnx, '
      '.xgb.json/.xgb/.ubj). Name it: framework= one of '
      f"{', '.join(sorted(FRAMEWORKS))} "
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
