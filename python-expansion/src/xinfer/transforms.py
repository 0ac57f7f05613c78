"""The transforms xinfer's expansion service expands for Java pipelines.

Only the names in ``EXPANDABLE`` are allowlisted in the expansion service.
"""

from typing import Optional

import apache_beam as beam
from apache_beam.ml.inference import base

from xinfer import convert
from xinfer import handlers


class RowInference(beam.PTransform):
  """Runs a model on Rows; each output Row is the input plus the inference.

  Args:
    model_uri: a TensorFlow SavedModel directory or ``.keras`` file.
    feature_field: the input field holding the model input (an array of numbers).
    framework: the model framework (``tensorflow``).
    model_id: the id carried by each output; defaults to the model's file name.
    min_batch_size, max_batch_size: bounds for Beam's batching.
  """
  def __init__(self,
               model_uri: str,
               feature_field: str,
               framework: str = 'tensorflow',
               model_id: Optional[str] = None,
               min_batch_size: int = handlers.DEFAULT_MIN_BATCH_SIZE,
               max_batch_size: int = handlers.DEFAULT_MAX_BATCH_SIZE):
    super().__init__()
    handlers.check_model_uri(model_uri)
    self._feature_field = feature_field
    self._handler = handlers.create_handler(framework,
                                            model_uri,
                                            feature_field=feature_field,
                                            model_id=model_id,
                                            min_batch_size=int(min_batch_size),
                                            max_batch_size=int(max_batch_size))

  def expand(self, rows):
    fields = convert.schema_fields(rows.element_type)
    convert.check_feature_field(fields, self._feature_field)
    field_names = [name for name, _ in fields]
    return (rows
            | 'Inference' >> base.RunInference(self._handler)
            | 'ToRows' >> beam.Map(convert.to_output_row,
                                   field_names).with_output_types(
                                       convert.output_type(fields)))


EXPANDABLE = ('xinfer.transforms.RowInference', )
