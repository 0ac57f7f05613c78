"""ONNX: ``.onnx`` files run by onnxruntime on CPU.

Usage (Java names the framework with ``withFramework(Model.Framework.ONNX)``, or it is
detected from the file name)::

  from xinfer.handlers import create_handler
  handler = create_handler(None, '/models/digits-sklearn.onnx',
                           feature_field='features')
"""

import os

import numpy as np

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import require_cuda


class OnnxRowHandler(RowModelHandler):
  gpu = True
  """ONNX: an ``.onnx`` file run by onnxruntime on CPU.

  Without named inputs the model's first input takes the batch; with them
  (``withInput``) each input is fed by name. Without declared outputs the
  scores are its first float tensor output (for a converted scikit-learn
  classifier, the probabilities: convert with ``options={'zipmap': False}``);
  declared outputs (``withOutput``) are read by name.
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
    providers = ['CPUExecutionProvider']
    if self._device != 'cpu':
      require_cuda(
          self._device, 'CUDAExecutionProvider'
          in onnxruntime.get_available_providers(), 'ONNX Runtime')
      providers = [('CUDAExecutionProvider', {
          'device_id': int(self._device.partition(':')[2] or 0)
      })] + providers
    session = onnxruntime.InferenceSession(path,
                                           sess_options=options,
                                           providers=providers)
    model_inputs = session.get_inputs()
    model_outputs = session.get_outputs()
    self.check_signature(path, [i.name for i in model_inputs],
                         [o.name for o in model_outputs])
    dtypes = {}
    for model_input in model_inputs:
      dtype = self._DTYPES.get(model_input.type)
      if dtype is None and model_input.type != 'tensor(string)':
        raise ValueError(
            f"RunInference: the ONNX model '{path}' takes {model_input.type} as "
            f"'{model_input.name}'; xinfer feeds float, double, int32, int64 "
            'and string tensors.')
      dtypes[model_input.name] = dtype or object
    shapes = {
        i.name: tuple(d if isinstance(d, int) else None for d in i.shape)
        for i in model_inputs
    }
    first = model_inputs[0].name
    if self.outputs:
      output_name = None
    else:
      floats = [
          o for o in model_outputs
          if o.type in ('tensor(float)', 'tensor(double)')
      ]
      if not floats:
        raise ValueError(
            f"RunInference: the ONNX model '{path}' has no float tensor output "
            f"(outputs: {[(o.name, o.type) for o in model_outputs]}). For a "
            "scikit-learn classifier, convert with options={'zipmap': False}"
            ', or declare the outputs with withOutput (Java).')
      output_name = floats[0].name

    def predict(x):
      feed = x if isinstance(x, dict) else {first: x}
      for name, value in feed.items():
        # onnxruntime reads a bytes object as its repr ("b'...'"): refuse it
        # rather than run the model on that text.
        if value.dtype == object and any(
            isinstance(v, bytes) for v in value.flat):
          raise TypeError(
              f"RunInference: the ONNX model '{path}' takes text as '{name}'; "
              'this input holds bytes, which ONNX Runtime would read as their '
              "Python repr (b'...'). Feed it a STRING field, or decode the "
              'bytes in a preprocess function.')
      if output_name is not None:
        return session.run([output_name], feed)[0]
      return {o.name: r for o, r in zip(model_outputs, session.run(None, feed))}

    if self.named_inputs:
      return LoadedModel(predict,
                         None,
                         inputs={n: (shapes[n], dtypes[n])
                                 for n in shapes})
    if dtypes[first] is object:
      raise ValueError(
          f"RunInference: the ONNX model '{path}' takes strings as '{first}'; "
          'name the field that holds them with withInput (Java).')
    return LoadedModel(predict, list(shapes[first]), dtypes[first])


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'onnx'
HANDLER = OnnxRowHandler
SUFFIXES = ('.onnx', )
