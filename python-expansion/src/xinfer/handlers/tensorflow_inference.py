"""TensorFlow: SavedModel directories and Keras ``.keras`` files.

Usage (Java names the framework with ``withFramework(Model.Framework.TENSORFLOW)``, or it is
detected from the file name)::

  from xinfer.handlers import create_handler
  handler = create_handler('tensorflow', '/models/digits-mlp',
                           feature_field='features')
  # or: TensorFlowRowHandler('/models/digits-mlp.keras', feature_field='features')
"""

import os

import numpy as np

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler


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


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'tensorflow'
HANDLER = TensorFlowRowHandler
SUFFIXES = ('.keras', )
