"""Model handlers built from plain arguments, so Java can name them.

Each handler follows Beam's ``ModelHandler`` contract: ``load_model`` once per
worker, ``run_inference`` per batch. The examples are Rows; ``xinfer.convert``
turns a batch of them into one input tensor and the predictions back.
"""

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult

from xinfer import convert

DEFAULT_MIN_BATCH_SIZE = 1
DEFAULT_MAX_BATCH_SIZE = 256


class LoadedModel:
  """A model as xinfer calls it: a batch function and its input signature."""
  def __init__(self,
               predict: Callable[[np.ndarray], np.ndarray],
               input_shape: Sequence[Optional[int]],
               input_dtype=np.float32):
    self.predict = predict
    self.input_shape = tuple(input_shape)
    self.input_dtype = input_dtype


def check_model_uri(model_uri: str):
  """Fails fast when a local model path does not exist."""
  if not model_uri:
    raise ValueError(
        'RunInference: model_uri is empty. Pass the path of a TensorFlow '
        'SavedModel directory or .keras file (withModel in Java).')
  if '://' not in model_uri and not os.path.exists(model_uri):
    raise FileNotFoundError(
        f"RunInference: no model at '{model_uri}' (resolved to "
        f"'{os.path.abspath(model_uri)}' on the expansion service's machine). "
        'Check the path, or create the demo model with ./xinfer setup.')


def check_batch_sizes(min_batch_size: int, max_batch_size: int):
  if min_batch_size < 1:
    raise ValueError(
        f'RunInference: min_batch_size must be at least 1, got {min_batch_size}.'
    )
  if max_batch_size < min_batch_size:
    raise ValueError(
        f'RunInference: max_batch_size ({max_batch_size}) must be at least '
        f'min_batch_size ({min_batch_size}).')


class RowModelHandler(ModelHandler[Any, PredictionResult, LoadedModel]):
  """Runs a model on batches of Rows; subclasses say how to load the model."""
  def __init__(self,
               model_uri: str,
               *,
               feature_field: str,
               model_id: Optional[str] = None,
               min_batch_size: int = DEFAULT_MIN_BATCH_SIZE,
               max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
    super().__init__()
    check_batch_sizes(min_batch_size, max_batch_size)
    self._model_uri = model_uri
    self._feature_field = feature_field
    self._model_id = model_id or os.path.basename(model_uri.rstrip('/'))
    self._min_batch_size = min_batch_size
    self._max_batch_size = max_batch_size

  @property
  def model_id(self) -> str:
    return self._model_id

  def load_model(self) -> LoadedModel:
    raise NotImplementedError

  def run_inference(
      self,
      batch: Sequence[Any],
      model: LoadedModel,
      inference_args: Optional[Dict[str, Any]] = None
  ) -> Sequence[PredictionResult]:
    tensor = convert.rows_to_batch(batch, self._feature_field,
                                   model.input_shape, model.input_dtype)
    outputs = np.asarray(model.predict(tensor))
    if outputs.shape[:1] != (len(batch), ):
      raise ValueError(
          f"RunInference: model '{self._model_id}' returned shape "
          f'{outputs.shape} for a batch of {len(batch)}; it must return one '
          'output per record (batch dimension first).')
    return [
        convert.scores_to_result(row, output, self._model_id)
        for row, output in zip(batch, outputs)
    ]

  def get_num_bytes(self, batch: Sequence[Any]) -> int:
    return sum(
        len(getattr(row, self._feature_field) or ()) * 4 for row in batch)

  def get_metrics_namespace(self) -> str:
    return 'xinfer'

  def batch_elements_kwargs(self) -> Mapping[str, Any]:
    return {
        'min_batch_size': self._min_batch_size,
        'max_batch_size': self._max_batch_size,
    }


class TensorFlowRowHandler(RowModelHandler):
  """TensorFlow: a SavedModel directory (its ``serving_default`` signature) or a
  Keras ``.keras`` file.

  SavedModels load with ``tf.saved_model.load``, so models exported by current
  TensorFlow and Keras 3 (``model.export``) work; Beam's own TF handler loads them
  through ``tf.keras.models.load_model``, which Keras 3 refuses.
  """
  def load_model(self) -> LoadedModel:
    import tensorflow as tf
    check_model_uri(self._model_uri)
    if self._model_uri.endswith('.keras'):
      import keras
      model = keras.models.load_model(self._model_uri)
      shape = tuple(model.inputs[0].shape)
      return LoadedModel(lambda x: np.asarray(model(x, training=False)), shape,
                         np.float32)
    loaded = tf.saved_model.load(self._model_uri)
    signatures = getattr(loaded, 'signatures', {})
    if 'serving_default' not in signatures:
      raise ValueError(
          f"RunInference: the SavedModel at '{self._model_uri}' has no "
          f"'serving_default' signature (it has: {', '.join(signatures) or 'none'})."
          ' Export it with model.export(path) or tf.saved_model.save(..., '
          'signatures=...).')
    signature = signatures['serving_default']
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
      raise ValueError(
          f"RunInference: the SavedModel at '{self._model_uri}' has inputs "
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


FRAMEWORKS: Dict[str, Callable[..., RowModelHandler]] = {
    'tensorflow': TensorFlowRowHandler,
}


def create_handler(framework: str, model_uri: str, **kwargs) -> RowModelHandler:
  """The model-handler factory: a handler for a framework from plain arguments."""
  try:
    handler_class = FRAMEWORKS[framework]
  except KeyError:
    raise ValueError(
        f"RunInference: unknown framework '{framework}'; xinfer supports "
        f"{', '.join(sorted(FRAMEWORKS))}.") from None
  return handler_class(model_uri, **kwargs)


def tensorflow_handler(
    model_uri: str,
    *,
    feature_field: str,
    model_id: Optional[str] = None,
    min_batch_size: int = DEFAULT_MIN_BATCH_SIZE,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> RowModelHandler:
  """A TensorFlow handler for Rows, from plain arguments."""
  return create_handler('tensorflow',
                        model_uri,
                        feature_field=feature_field,
                        model_id=model_id,
                        min_batch_size=min_batch_size,
                        max_batch_size=max_batch_size)
