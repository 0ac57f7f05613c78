"""Every metric xinfer's Python side reports: one list, read back by name in
Java (``dev.xinfer.InferenceMetrics``).

Records that cross in blocks (``xinfer.blocks``) skip Beam's ``RunInference``,
so the block path reports Beam's RunInference metrics itself, under Beam's
names (``BEAM_*`` below; ``xinfer.beam_compat`` checks them against the Beam
version installed). ``python -m xinfer.metrics`` prints the names as JSON:
``{"namespace": ..., "counters": [...], "distributions": [...],
"counter_prefixes": [...]}`` (a prefix names a counter per stage or model id).
"""

import json

from apache_beam.metrics import Metrics

NAMESPACE = 'xinfer'

# Beam's RunInference metrics (apache_beam.ml.inference.base._MetricsCollector).
NUM_INFERENCES = 'num_inferences'
FAILED_BATCHES = 'failed_batches_counter'
BATCH_SIZE = 'inference_request_batch_size'
BATCH_BYTE_SIZE = 'inference_request_batch_byte_size'
BATCH_LATENCY_MICROS = 'inference_batch_latency_micro_secs'
MODEL_BYTE_SIZE = 'model_byte_size'
LOAD_MODEL_LATENCY_MILLIS = 'load_model_latency_milli_secs'
BEAM_COUNTERS = (NUM_INFERENCES, FAILED_BATCHES)
BEAM_DISTRIBUTIONS = (BATCH_SIZE, BATCH_BYTE_SIZE, BATCH_LATENCY_MICROS,
                      MODEL_BYTE_SIZE, LOAD_MODEL_LATENCY_MILLIS)

# xinfer's own.
PREDICTIONS = 'predictions'
FAILURES = 'failures'
# Records the model ran as part of a block's tensors (``xinfer.blocks``); the
# other records of blocks went record by record (a block that did not fit).
PACKED_RECORDS = 'packed_records'
FAILED_PREFIX = 'failed_'  # + the stage: failed_conversion, ...
MODEL_REFRESHES = 'model_refreshes'
# Predictions per model id (the ``model_id`` each prediction carries): which
# models serve, and how much each, while a job runs. A counter per id, so that
# it reaches every runner's metrics and Flink's metric system (which takes
# Beam's counters and distributions, not its string sets); after a model
# refresh the new id's counter grows and the old one's stops. '/' because
# Flink's REST API shows ':', '.', ',' and ' ' of a metric's name as '_'.
PREDICTIONS_BY_MODEL_PREFIX = 'predictions_by_model/'
MODEL_EVICTIONS = 'model_evictions'
KEYED_LOAD_MODEL_LATENCY_MILLIS = 'keyed_load_model_latency_milli_secs'
REFRESH_LOAD_LATENCY_MILLIS = 'refresh_load_latency_milli_secs'

# The stages a record can fail in (the dead-letter output's ``stage``): in a
# handler, and before it (a keyed record whose key has no model).
STAGES = ('preprocessing', 'conversion', 'inference', 'postprocessing')
ROUTING = 'routing'


def failed(stage: str) -> str:
  """The counter of records that failed in ``stage``."""
  return FAILED_PREFIX + stage


def predictions_by_model(model_id: str) -> str:
  """The counter of predictions made by the model ``model_id``."""
  return PREDICTIONS_BY_MODEL_PREFIX + model_id


class ModelCounters:
  """The ``predictions_by_model/<id>`` counters, made once per model id."""
  def __init__(self):
    self._counters = {}

  def inc(self, model_id: str, n: int = 1):
    counter = self._counters.get(model_id)
    if counter is None:
      counter = Metrics.counter(NAMESPACE, predictions_by_model(model_id))
      self._counters[model_id] = counter
    counter.inc(n)


COUNTERS = BEAM_COUNTERS + (PREDICTIONS, FAILURES, PACKED_RECORDS,
                            MODEL_REFRESHES, MODEL_EVICTIONS) + tuple(
                                failed(s) for s in STAGES + (ROUTING, ))
DISTRIBUTIONS = BEAM_DISTRIBUTIONS + (KEYED_LOAD_MODEL_LATENCY_MILLIS,
                                      REFRESH_LOAD_LATENCY_MILLIS)


def names() -> dict:
  return {
      'namespace': NAMESPACE,
      'counters': list(COUNTERS),
      'distributions': list(DISTRIBUTIONS),
      'counter_prefixes': [FAILED_PREFIX, PREDICTIONS_BY_MODEL_PREFIX],
  }


if __name__ == '__main__':
  print(json.dumps(names()))
