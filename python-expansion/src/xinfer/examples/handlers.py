"""An example factory of a Beam ``ModelHandler``, named from Java with
``Model.ofHandler("xinfer.examples.handlers:beam_sklearn", Map.of("model_uri", path))``:
Beam's own scikit-learn handler, which xinfer then runs with its dead letters,
metrics and model ids. A factory is any function (or ModelHandler class) that
takes keyword arguments from JSON and returns a ModelHandler; Beam's handler
needs its file type as an enum, which JSON cannot carry, so this one sets it.
"""

from apache_beam.ml.inference.sklearn_inference import ModelFileType
from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy


def beam_sklearn(model_uri: str) -> SklearnModelHandlerNumpy:
  """Beam's scikit-learn handler for a joblib file: ``predict`` per record."""
  return SklearnModelHandlerNumpy(model_uri=model_uri,
                                  model_file_type=ModelFileType.JOBLIB)
