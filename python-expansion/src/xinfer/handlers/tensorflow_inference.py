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
from xinfer.handlers.base import require_cuda


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
  gpu = True

  def validate_inference_args(self, inference_args):
    if inference_args and not self._model_uri.endswith('.keras'):
      raise ValueError(
          f'RunInference: inference_args {sorted(inference_args)} were given, '
          'but a SavedModel signature takes only its input tensor. Use a .keras '
          'file, or drop the inference args.')

  def _load(self, path: str) -> LoadedModel:
    import tensorflow as tf
    device = '/CPU:0'
    if self._device != 'cpu':
      index = int(self._device.partition(':')[2] or 0)
      require_cuda(self._device,
                   len(tf.config.list_physical_devices('GPU')) > index,
                   'TensorFlow')
      device = f'/GPU:{index}'
    with tf.device(device):
      return self._load_on(path, tf, device)

  def _load_on(self, path: str, tf, device: str) -> LoadedModel:
    if path.endswith('.keras'):
      import keras
      model = keras.models.load_model(path)
      inputs = {
          getattr(t, 'name', f'input_{i}').split(':')[0]: (tuple(t.shape), None)
          for i, t in enumerate(model.inputs)
      }

      def call_keras(x, **kw):
        with tf.device(device):
          out = model(x, training=False, **kw)
        return tuple(out) if isinstance(out, (list, tuple)) else out

      return LoadedModel(call_keras,
                         tuple(model.inputs[0].shape),
                         np.float32,
                         inputs=inputs if len(inputs) > 1 else None)
    loaded = tf.saved_model.load(path)
    signatures = getattr(loaded, 'signatures', {})
    if 'serving_default' not in signatures:
      raise ValueError(
          f"RunInference: the SavedModel at '{path}' has no "
          f"'serving_default' signature (it has: {', '.join(signatures) or 'none'})."
          ' Export it with model.export(path) or tf.saved_model.save(..., '
          'signatures=...).')
    signature = signatures['serving_default']
    specs = dict(signature.structured_input_signature[1])
    self.check_signature(path, list(specs), list(signature.structured_outputs))
    input_name = None
    if not self.named_inputs:
      if len(specs) != 1:
        raise ValueError(
            f"RunInference: the SavedModel at '{path}' has inputs "
            f"{', '.join(sorted(specs))}; name where each comes from with "
            'withInput(modelInput, field) (Java).')
      input_name = next(iter(specs))

    def predict(x):
      feed = x if isinstance(x, dict) else {input_name: x}
      result = signature(
          **{
              name: tf.constant(value, dtype=specs[name].dtype)
              for name, value in feed.items()
          })
      result = {name: tensor.numpy() for name, tensor in result.items()}
      if len(result) == 1 and not self.outputs:
        return next(iter(result.values()))
      return result

    # Keep the loaded object alive: the signature does not hold it.
    predict.saved_model = loaded
    inputs = {
        name: (tuple(spec.shape.as_list()), spec.dtype.as_numpy_dtype)
        for name, spec in specs.items()
    }
    if input_name is not None:
      shape, dtype = inputs[input_name]
      return LoadedModel(predict, shape, dtype)
    return LoadedModel(predict, None, inputs=inputs)


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'tensorflow'
HANDLER = TensorFlowRowHandler
SUFFIXES = ('.keras', )
