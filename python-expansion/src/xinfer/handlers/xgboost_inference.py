"""XGBoost: boosters saved with ``save_model`` (``.xgb.json``, ``.ubj``).

Usage (Java names the framework with ``withFramework(Model.Framework.XGBOOST)``,
or it is detected from the file name)::

  from xinfer.handlers import create_handler
  handler = create_handler(None, '/models/diabetes.xgb.json',
                           feature_field='features',
                           outputs=[{'name': 'prediction', 'type': 'float64'}])
"""

import numpy as np

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import require_cuda


class XGBoostRowHandler(RowModelHandler):
  """XGBoost: a booster file, run on CPU with ``inplace_predict``.

  A regressor gives one number per record (declare it, e.g.
  ``withOutput("prediction", FieldType.DOUBLE)``); a ``multi:softprob``
  classifier gives its class probabilities as scores. inference_args are
  keyword arguments of ``inplace_predict`` (e.g. ``iteration_range``).
  """
  accepts_inference_args = True
  gpu = True

  def _load(self, path: str) -> LoadedModel:
    import xgboost
    booster = xgboost.Booster()
    booster.load_model(path)
    booster.set_param({'nthread': 1})
    if self._device != 'cpu':
      require_cuda(self._device,
                   xgboost.build_info().get('USE_CUDA', False), 'XGBoost')
      booster.set_param({'device': self._device})
    n = booster.num_features()

    def predict(x, **kwargs):
      if isinstance(x, dict):
        raise TypeError(
            'RunInference: an XGBoost model takes one input (a feature array); '
            f"withInput names {', '.join(x)}. Use withFeatureField.")
      return np.asarray(booster.inplace_predict(x, **kwargs))

    return LoadedModel(predict, (None, n), np.float32)


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'xgboost'
HANDLER = XGBoostRowHandler
SUFFIXES = ('.xgb.json', '.xgb', '.ubj')
