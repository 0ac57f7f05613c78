"""scikit-learn: models saved with joblib or pickle.

Usage (Java names the framework with ``withFramework(Model.Framework.SKLEARN)``, or it is
detected from the file name)::

  from xinfer.handlers import create_handler
  handler = create_handler(None, '/models/digits-sklearn.joblib',
                           feature_field='features',
                           model_sha256='<sha256sum of the file>')
"""

import os

import numpy as np

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler


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
      if isinstance(x, dict):
        raise TypeError(
            'RunInference: a scikit-learn model takes one input (a feature '
            f"array); withInput names {', '.join(x)}. Use withFeatureField.")
      out = np.asarray(method(x, **kwargs))
      return out.reshape(len(x), -1)

    return LoadedModel(predict, (None, n), np.float64)


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'sklearn'
HANDLER = SklearnRowHandler
SUFFIXES = ('.joblib', '.pkl', '.pickle')
