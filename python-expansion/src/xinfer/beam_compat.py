"""Where xinfer's Python side depends on Beam internals: the one module to read
on a Beam upgrade (CONTRIBUTING.md, "Upgrading Beam").

Each hook says what it reaches and why. ``problems()`` lists the hooks whose
target is gone or changed in the installed Beam; ``tests/test_beam_compat.py``
fails on any, so a Beam upgrade that breaks one fails there first, by name.
"""

import inspect
from typing import List, Sequence

import apache_beam
from apache_beam.ml.inference import base as inference_base
from apache_beam.runners.worker import sdk_worker
from apache_beam.runners.worker import worker_pool_main
from apache_beam.transforms import fully_qualified_named_transform

from xinfer import metrics

# The Beam version these hooks were written and checked for; Java's Beam
# (the root pom.xml's beam.version) must be the same.
BEAM_VERSION = '2.62.0'

# The command the worker pool runs for each SDK worker: Beam's own worker
# pool (worker_pool_main.BeamFnExternalWorkerPoolServicer) runs the same one.
SDK_WORKER_COMMAND = (
    'from apache_beam.runners.worker.sdk_worker import SdkHarness; '
    'SdkHarness({url!r}, worker_id={worker_id!r}, state_cache_size=0, '
    'data_buffer_time_limit_ms=-1).run()')

stop_worker_process = worker_pool_main.kill_process_gracefully


def install_exact_allowlist(names: Sequence[str]):
  """Makes Beam's expansion service expand exactly ``names``.

  Beam checks a fully qualified name against one glob (fnmatch) in
  ``FullyQualifiedNamedTransform._check_allowed``; a glob cannot list several
  exact names, so that private classmethod is replaced by an exact-name check
  (no wildcards at all).
  """
  allowed = frozenset(names)
  cls = fully_qualified_named_transform.FullyQualifiedNamedTransform

  def check_allowed(unused_cls, fully_qualified_name):
    if fully_qualified_name not in allowed:
      raise ValueError(
          f'xinfer expansion service: "{fully_qualified_name}" is not on the '
          f'allowlist ({", ".join(sorted(allowed))}).')

  cls._check_allowed = classmethod(check_allowed)


def beam_run_inference_metric_names() -> List[str]:
  """The metric names Beam's RunInference reports (its private
  ``_MetricsCollector``), which the block path reports under the same names."""
  collector = inference_base._MetricsCollector(metrics.NAMESPACE)
  return sorted(m.metric_name.name for m in vars(collector).values()
                if hasattr(m, 'metric_name'))


def problems() -> List[str]:
  """What no longer matches in the installed Beam, one line per hook."""
  found = []
  if apache_beam.__version__ != BEAM_VERSION:
    found.append(
        f'apache-beam is {apache_beam.__version__}; the hooks were '
        f'checked for {BEAM_VERSION} (xinfer.beam_compat.BEAM_VERSION)')
  cls = fully_qualified_named_transform.FullyQualifiedNamedTransform
  check = inspect.getattr_static(cls, '_check_allowed', None)
  if not isinstance(check, classmethod):
    found.append('FullyQualifiedNamedTransform._check_allowed is no longer a '
                 'classmethod: install_exact_allowlist patches nothing')
  try:
    names = beam_run_inference_metric_names()
  except Exception as e:  # pylint: disable=broad-except
    found.append(f'apache_beam.ml.inference.base._MetricsCollector: {e!r}')
  else:
    ours = sorted(metrics.BEAM_COUNTERS + metrics.BEAM_DISTRIBUTIONS)
    if names != ours:
      found.append(f"Beam's RunInference metrics are {names}; "
                   f'xinfer.metrics says {ours}')
  harness = inspect.signature(sdk_worker.SdkHarness)
  for arg in ('worker_id', 'state_cache_size', 'data_buffer_time_limit_ms'):
    if arg not in harness.parameters:
      found.append(f'SdkHarness takes no {arg}: SDK_WORKER_COMMAND fails')
  if not callable(getattr(worker_pool_main, 'kill_process_gracefully', None)):
    found.append('worker_pool_main.kill_process_gracefully is gone')
  return found
