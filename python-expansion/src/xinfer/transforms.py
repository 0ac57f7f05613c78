"""The transforms xinfer's expansion service expands for Java pipelines.

Only the names in ``EXPANDABLE`` are allowlisted in the expansion service.
"""

import json
import typing
from typing import Any, Dict, List, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base

from xinfer import blocks
from xinfer import convert
from xinfer import handlers
from xinfer import metrics

PREDICTIONS = 'predictions'
FAILURES = 'failures'
ROUTING = metrics.ROUTING


def _json(value: Union[None, str, Dict, List], what: str):
  if value is None or isinstance(value, (dict, list)):
    return value
  try:
    return json.loads(value)
  except ValueError as e:
    raise ValueError(f'RunInference: {what} is not valid JSON ({e}): '
                     f'{value[:200]!r}') from e


def _row_type_of(element_type, keyed: bool):
  if not keyed:
    return element_type
  args = getattr(element_type, 'tuple_types',
                 None) or typing.get_args(element_type)
  if not args or len(args) != 2:
    raise TypeError(
        'RunInference: keyed inference needs a PCollection of (key, Row) pairs '
        f'(Java: KV<String, Row>); got elements of type {element_type!r}.')
  return args[1]


class RowInference(beam.PTransform):
  """Runs models on Rows; each output Row is the input plus the inference.

  Args:
    model_uri: the model (a TensorFlow SavedModel directory or ``.keras`` file,
      a PyTorch ``.pt`` file, a scikit-learn ``.joblib``/``.pkl`` file, or an
      ``.onnx`` file); with ``refresh_interval_secs``, a glob pattern of
      versions.
    feature_field: the input field holding the model input.
    framework: ``tensorflow``, ``pytorch``, ``sklearn`` or ``onnx``; detected
      from the model's name when not given.
    model_id: the id carried by each output; defaults to the model's file name.
    model_class, model_params: PyTorch state dicts: the ``nn.Module`` class
      (``package.module:Class``, from a module the operator allowed) and its
      constructor's arguments (JSON object).
    model_sha256: the sha256 (hex) the model file must have to be loaded.
    task: Hugging Face models: the pipeline task (``text-classification``,
      ``feature-extraction``).
    device: ``cpu`` (default), ``cuda`` or ``cuda:N``.
    models: keyed inference with several models: a JSON list of objects with
      ``keys`` and the per-model arguments above (``model_uri``, ``framework``,
      ``model_id``, ``model_class``, ``model_params``, ``model_sha256``).
    keyed: the input is ``(key, Row)`` pairs and so is the output.
    dead_letter: return ``{'predictions': ..., 'failures': ...}``; otherwise
      a record that gets no prediction fails the pipeline.
    min_batch_size, max_batch_size, max_batch_wait_secs: batching.
    max_models_in_memory: keyed inference: the most models loaded per worker.
    inference_args: a JSON object of keyword arguments for the model call.
    preprocess, postprocess: ``package.module:function`` hooks (see
      ``xinfer.handlers.RowModelHandler``).
    nan_policy: ``reject`` or ``allow`` NaN/infinite feature values.
    refresh_interval_secs: look for a newer model version this often.
    packed: the input is blocks of rows (``xinfer.blocks``), not Rows, and so
      is the prediction output; Java's RunInference packs and unpacks them.
      Each block carries the feature field, or each named input's field, as
      a tensor, and its output the declared outputs, or the scores and
      classes, as tensors (``blocks.Layout``).
    input_schema: with ``packed``: the rows' schema (a base64 Schema proto).
    feature_dtype: sent only by Java halves older than blocks of several
      tensors; refused with the version message.
    inputs: named model inputs, a JSON list of ``{"name", "field",
      "shape"?}``: each model input from a field of its own (replaces
      ``feature_field``; see ``xinfer.convert.InputSpec``).
    outputs: declared outputs, a JSON list of ``{"name", "type"}``: each
      prediction carries these fields (the model's outputs of those names,
      converted to those types) and ``model_id``, instead of ``scores`` and
      ``predicted_class``.
  """
  def __init__(self,
               model_uri: Optional[str] = None,
               feature_field: str = 'features',
               framework: Optional[str] = None,
               model_id: Optional[str] = None,
               model_class: Optional[str] = None,
               model_params: Union[None, str, Dict[str, Any]] = None,
               model_sha256: Optional[str] = None,
               task: Optional[str] = None,
               device: Optional[str] = None,
               models: Union[None, str, List[Dict[str, Any]]] = None,
               keyed: bool = False,
               dead_letter: bool = False,
               min_batch_size: int = handlers.DEFAULT_MIN_BATCH_SIZE,
               max_batch_size: int = handlers.DEFAULT_MAX_BATCH_SIZE,
               max_batch_wait_secs: Optional[float] = None,
               max_models_in_memory: Optional[int] = None,
               inference_args: Union[None, str, Dict[str, Any]] = None,
               preprocess: Optional[str] = None,
               postprocess: Optional[str] = None,
               nan_policy: str = convert.NAN_REJECT,
               refresh_interval_secs: Optional[float] = None,
               bundle_timeout_secs: Optional[float] = None,
               packed: bool = False,
               input_schema: Optional[str] = None,
               feature_dtype: Optional[str] = None,
               inputs: Union[None, str, List[Dict[str, Any]]] = None,
               outputs: Union[None, str, List[Dict[str, Any]]] = None):
    super().__init__()
    self._inputs = convert.parse_inputs(_json(inputs, 'inputs'))
    self._outputs = convert.parse_outputs(_json(outputs, 'outputs'))
    self._packed = bool(packed)
    self._input_schema = input_schema
    if self._packed and (keyed or preprocess or postprocess
                         or max_batch_wait_secs or not input_schema
                         or feature_dtype is not None):
      raise ValueError(
          'RunInference: packed blocks need input_schema (and no '
          'feature_dtype) and take no keys, hooks or batch wait; the Java and '
          'Python halves of xinfer are from different versions: re-run '
          './xinfer setup.')
    self._feature_field = feature_field
    self._keyed = bool(keyed)
    self._dead_letter = bool(dead_letter)
    self._preprocess = preprocess
    self._inference_args = _json(inference_args, 'inference_args')
    common = dict(feature_field=feature_field,
                  preprocess=preprocess,
                  postprocess=postprocess,
                  nan_policy=nan_policy,
                  refresh_interval_secs=refresh_interval_secs,
                  min_batch_size=int(min_batch_size),
                  max_batch_size=int(max_batch_size),
                  max_batch_wait_secs=max_batch_wait_secs,
                  bundle_timeout_secs=bundle_timeout_secs,
                  inputs=_json(inputs, 'inputs'),
                  outputs=_json(outputs, 'outputs'))
    mappings = _json(models, 'models')
    if mappings is None:
      if not model_uri:
        raise ValueError(
            'RunInference: no model: pass model_uri (withModel in Java).')
      single = self._handler(common,
                             model_uri=model_uri,
                             framework=framework,
                             model_id=model_id,
                             model_class=model_class,
                             model_params=model_params,
                             model_sha256=model_sha256,
                             task=task,
                             device=device)
      self._known_keys = None
      # Keyed with one model: every key goes to it.
      self._model_handler = (handlers.KeyedRowModelHandler([], default=single)
                             if self._keyed else single)
    else:
      if not self._keyed:
        raise ValueError(
            'RunInference: several models need keyed input: apply the keyed '
            'form (RunInference...keyed() in Java) to (key, Row) pairs.')
      if model_uri:
        raise ValueError(
            'RunInference: pass either model_uri or models, not both.')
      built = []
      for mapping in mappings:
        mapping = dict(mapping)
        keys = [str(k) for k in mapping.pop('keys', [])]
        built.append((keys, self._handler(common, **mapping)))
      self._model_handler = handlers.KeyedRowModelHandler(
          built,
          max_models_in_memory=(None if max_models_in_memory is None else
                                int(max_models_in_memory)))
      self._known_keys = frozenset(self._model_handler.keys)
    self._model_handler.check_model_exists()
    self._model_handler.validate_inference_args(self._inference_args)

  @staticmethod
  def _handler(common: Dict[str, Any],
               *,
               model_uri: str,
               framework: Optional[str] = None,
               model_id: Optional[str] = None,
               model_class: Optional[str] = None,
               model_params: Union[None, str, Dict[str, Any]] = None,
               model_sha256: Optional[str] = None,
               task: Optional[str] = None,
               device: Optional[str] = None,
               **unknown) -> handlers.RowModelHandler:
    if unknown:
      raise ValueError(
          f"RunInference: unknown model argument(s) {', '.join(sorted(unknown))}"
          '; a model takes keys, model_uri, framework, model_id, model_class, '
          'model_params, model_sha256, task and device.')
    options = {}
    if device:
      options['device'] = device
    if task:
      options['task'] = task
    if model_class:
      options['model_class'] = model_class
    params = _json(model_params, 'model_params')
    if params:
      options['model_params'] = params
    return handlers.create_handler(framework,
                                   model_uri,
                                   model_id=model_id,
                                   model_sha256=model_sha256,
                                   **common,
                                   **options)

  def _bind(self, fields) -> Any:
    """Checks the input's fields against the inputs and outputs, binds the
    handlers to them, and returns the output Row type."""
    if self._outputs:
      convert.check_output_fields(fields, self._outputs)
      output_type = convert.declared_output_type(fields, self._outputs)
    else:
      convert.check_feature_field(fields,
                                  self._feature_field,
                                  preprocessed=True)
      output_type = convert.output_type(fields)
    if not self._inputs:
      convert.check_feature_field(fields,
                                  self._feature_field,
                                  preprocessed=bool(self._preprocess))
    self._model_handler.bind_schema(fields)
    return output_type

  def expand(self, pcoll):
    if self._packed:
      return self._expand_blocks(pcoll)
    input_type = _row_type_of(pcoll.element_type, self._keyed)
    fields = convert.schema_fields(input_type)
    output_type = self._bind(fields)
    field_names = [name for name, _ in fields]
    failure_type = convert.failure_type(input_type)
    if self._keyed:
      # Beam's Tuple (not typing's): its coder is a KV coder Java knows.
      output_type = beam.typehints.Tuple[str, output_type]

    checked = (
        pcoll
        | 'CheckKeys' >> beam.ParDo(
            _CheckKeys(self._known_keys, self._dead_letter)).with_outputs(
                FAILURES, main=PREDICTIONS))
    inputs = _typed(checked[PREDICTIONS], pcoll.element_type)
    routed = (
        inputs
        | 'Inference' >> base.RunInference(self._model_handler,
                                           inference_args=self._inference_args)
        | 'Route' >> beam.ParDo(
            _Route(field_names, self._keyed, self._dead_letter)).with_outputs(
                FAILURES, main=PREDICTIONS))
    predictions = _typed(routed[PREDICTIONS], output_type)
    if not self._dead_letter:
      return predictions
    failures = ((_typed(checked[FAILURES],
                        failure_type), _typed(routed[FAILURES], failure_type))
                | 'Failures' >> beam.Flatten())
    return {PREDICTIONS: predictions, FAILURES: failures}

  def _expand_blocks(self, pcoll):
    blocks.check_block_type(pcoll.element_type)
    schema = blocks.input_schema(self._input_schema)
    input_type = blocks.row_type_of(schema)
    fields = convert.schema_fields(input_type)
    self._bind(fields)
    layout = blocks.Layout.of(
        fields, self._feature_field,
        convert.bind_inputs(fields, self._inputs) if self._inputs else (),
        self._outputs)
    outputs = (pcoll
               | 'Inference' >> beam.ParDo(
                   blocks.BlockInference(
                       self._model_handler, self._input_schema, layout,
                       self._inference_args, self._dead_letter, FAILURES,
                       failure_error)).with_outputs(FAILURES, main=PREDICTIONS))
    predictions = _typed(outputs[PREDICTIONS], blocks.OUT_TYPE)
    if not self._dead_letter:
      return predictions
    return {
        PREDICTIONS: predictions,
        FAILURES: _typed(outputs[FAILURES], convert.failure_type(input_type))
    }


def failure_error(outcome: handlers.Failure) -> convert.RecordError:
  """The error that fails the run for a record with no prediction and no
  dead-letter output."""
  return convert.RecordError(
      f'{outcome.message} [{outcome.stage} failed with '
      f'{outcome.error_type}; to get such records as output instead, use '
      'withFailures() in Java or dead_letter=True]')


def _typed(pcoll, element_type):
  """Sets a tagged output's element type (its coder follows from it)."""
  pcoll.element_type = element_type
  return pcoll


class _CheckKeys(beam.DoFn):
  """Sends keyed records whose key has no model to the failures."""
  def __init__(self, known_keys, dead_letter: bool):
    self._known = known_keys
    self._dead_letter = dead_letter
    self._failed = Metrics.counter(metrics.NAMESPACE, metrics.failed(ROUTING))

  def process(self, element):
    if self._known is None or element[0] in self._known:
      yield element
      return
    key, row = element
    message = (f"RunInference: key '{key}' has no model (keys with a model: "
               f"{', '.join(sorted(self._known))}). Map the key to a model or "
               'filter such records before RunInference.')
    if not self._dead_letter:
      raise convert.RecordError(message)
    self._failed.inc()
    yield beam.pvalue.TaggedOutput(
        FAILURES,
        convert.to_failure_row(row, ROUTING, 'KeyError', message, key=key))


class _Route(beam.DoFn):
  """Predictions to Rows on the main output, failures to ``failures``."""
  def __init__(self, field_names, keyed: bool, dead_letter: bool):
    self._field_names = field_names
    self._keyed = keyed
    self._dead_letter = dead_letter
    self._predictions = Metrics.counter(metrics.NAMESPACE, metrics.PREDICTIONS)
    self._failures = Metrics.counter(metrics.NAMESPACE, metrics.FAILURES)
    self._by_model = metrics.ModelCounters()

  def process(self, element):
    key, result = element if self._keyed else (None, element)
    outcome = result.inference
    if isinstance(outcome, handlers.Failure):
      if not self._dead_letter:
        raise failure_error(outcome)
      self._failures.inc()
      yield beam.pvalue.TaggedOutput(
          FAILURES,
          convert.to_failure_row(result.example, outcome.stage,
                                 outcome.error_type, outcome.message,
                                 result.model_id, key))
      return
    self._predictions.inc()
    self._by_model.inc(result.model_id or '')
    row = convert.to_output_row(result, self._field_names)
    yield (key, row) if self._keyed else row


EXPANDABLE = ('xinfer.transforms.RowInference', )
