"""Your own Beam ``ModelHandler``: anything Beam's Python RunInference runs,
run from a Java pipeline with xinfer's dead letters, metrics and model ids.

The model is a factory, ``package.module:name`` from a module the operator
allowed (``--xinferAllowedModules``), called with keyword arguments to make the
handler: a function that returns a ``ModelHandler``, or a ``ModelHandler``
class itself. Usage (Java: ``Model.ofHandler(factory, kwargs)``)::

  from xinfer.handlers import create_handler
  handler = create_handler(
      'beam_model_handler',
      'apache_beam.ml.inference.sklearn_inference:SklearnModelHandlerNumpy',
      model_params={'model_uri': '/models/digits-sklearn.joblib'},
      feature_field='features',
      outputs=[{'name': 'digit', 'type': 'int64'}])

Each record's example is its model input as xinfer makes it (a float32 array
from the feature field; with named inputs, a dict of them by input name; with a
preprocess function, what it returns). Each ``PredictionResult.inference`` is
that record's model output, mapped to the declared outputs (or the scores).
xinfer batches the records; the handler's own ``batch_elements_kwargs`` and
model refresh are not used.
"""

from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import check_function_path
from xinfer.handlers.base import import_function


class BeamModelHandlerRowHandler(RowModelHandler):
  """Runs the Beam ``ModelHandler`` a named factory makes.

  Args (beyond RowModelHandler's; ``model_uri`` is the factory's name):
    model_params: keyword arguments for the factory.
  """
  accepts_inference_args = True

  def _check_options(self, options):
    unknown = set(options) - {'model_params'}
    if unknown:
      super()._check_options({k: options[k] for k in unknown})
    if self._refresh_interval_secs is not None or self._model_sha256:
      raise ValueError(
          'RunInference: a Beam ModelHandler loads its own model: model '
          'refresh and model_sha256 apply to model files. Drop them, or run '
          'the model file with its framework.')
    check_function_path(self._model_uri, 'model handler')

  def check_model_exists(self):
    check_function_path(self._model_uri, 'model handler')

  def _load(self, path: str) -> LoadedModel:
    factory = import_function(path, 'model handler')
    handler = factory(**(self._options.get('model_params') or {}))
    if not isinstance(handler, ModelHandler):
      raise TypeError(
          f"RunInference: model handler '{path}' made {handler!r}; it must "
          'make an apache_beam.ml.inference.base.ModelHandler.')
    model = handler.load_model()

    def predict(examples, **kwargs):
      results = handler.run_inference(examples, model, kwargs or None)
      return [
          r.inference if isinstance(r, PredictionResult) else r for r in results
      ]

    return LoadedModel(predict, None, stacked=False)


# The registry's entry (xinfer.handlers): named only (no file suffix).
FRAMEWORK = 'beam_model_handler'
HANDLER = BeamModelHandlerRowHandler
SUFFIXES = ()
