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


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'onnx'
HANDLER = OnnxRowHandler
SUFFIXES = ('.onnx', )
