"""Where xinfer's Python side depends on Beam internals: the one module to read
on a Beam upgrade (CONTRIBUTING.md, "Upgrading Beam").

Each hook says what it reaches and why. ``problems()`` lists the hooks whose
target is gone or changed in the installed Beam; ``tests/test_beam_compat.py``
fails on any, so a Beam upgrade that breaks one fails there first, by name.
"""

import collections
import inspect
import queue
import time
from typing import List, Sequence

import apache_beam
from apache_beam.ml.inference import base as inference_base
from apache_beam.runners.worker import data_plane
from apache_beam.runners.worker import sdk_worker
from apache_beam.runners.worker import statesampler
from apache_beam.runners.worker import worker_pool_main
from apache_beam.transforms import fully_qualified_named_transform

from xinfer import metrics

# The Beam version these hooks were written and checked for; Java's Beam
# (the root pom.xml's beam.version) must be the same.
BEAM_VERSION = '2.62.0'

# The command the worker pool runs for each SDK worker: Beam's own worker
# pool (worker_pool_main.BeamFnExternalWorkerPoolServicer) runs the same one.
SDK_WORKER_COMMAND = (
    'from xinfer import beam_compat; beam_compat.prepare_sdk_worker(); '
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


class _FlushWhenIdleQueue(queue.Queue):
  """A bundle's queue of received data that, before it waits for more,
  flushes the outputs the bundle has written so far (``flush``)."""
  def __init__(self, flush):
    super().__init__(maxsize=5)  # Beam's size for these queues
    self._flush = flush

  def get(self, block=True, timeout=None):
    try:
      return super().get(block=False)
    except queue.Empty:
      if not block:
        raise
    self._flush()
    return super().get(block=block, timeout=timeout)


class _ReceivingQueues(collections.defaultdict):
  """``_GrpcDataChannel._received``: one ``_FlushWhenIdleQueue`` per bundle
  (instruction), which flushes the output streams the bundle opened."""
  def __init__(self):
    super().__init__()
    self.outputs = collections.defaultdict(list)

  def __missing__(self, instruction_id):
    received = _FlushWhenIdleQueue(lambda: self.flush(instruction_id))
    self[instruction_id] = received
    return received

  def flush(self, instruction_id):
    for stream in self.outputs.get(instruction_id, ()):
      stream.flush()
      stream._xinfer_since = None  # pylint: disable=protected-access


def _maybe_flush(stream):
  """``SizeBasedBufferingClosableOutputStream.maybe_flush``, called after
  each element written: flushes at Beam's size threshold or once the stream
  has held data for ``OUTPUT_FLUSH_MS``."""
  # pylint: disable=protected-access
  if stream.size() > stream._size_flush_threshold:
    stream.flush()
    stream._xinfer_since = None
    return
  now = time.monotonic()
  since = getattr(stream, '_xinfer_since', None)
  if since is None:
    stream._xinfer_since = now
  elif now - since >= OUTPUT_FLUSH_MS / 1000:
    stream.flush()
    stream._xinfer_since = None


def install_flush_when_idle():
  """Makes an SDK worker send a bundle's outputs whenever it has processed all
  the input it has received, and while busy at least every
  ``OUTPUT_FLUSH_MS``, not only once 1 MB has gathered or the bundle ends.

  Beam's worker flushes an output stream at 1 MB or at the bundle's end; its
  time-based flush (``data_buffer_time_limit_ms``) runs on a thread of its own
  and can cut an element in two. Here the bundle's own thread flushes, between
  elements: just before it would wait for input, and after an element once
  the stream has held data for ``OUTPUT_FLUSH_MS``. In a streaming stage the
  outputs leave as soon as their inputs are done; a busy stage (batch)
  flushes no more often than its input arrives or the period allows. Patches
  ``_GrpcDataChannel.__init__`` (its ``_received`` queues),
  ``output_stream`` (to know a bundle's streams), ``_clean_receiving_queue``
  (to forget them) and ``SizeBasedBufferingClosableOutputStream.maybe_flush``.
  """
  channel = data_plane._GrpcDataChannel
  if getattr(channel, '_xinfer_flush_when_idle', False):
    return
  init = channel.__init__
  output_stream = channel.output_stream
  clean_receiving_queue = channel._clean_receiving_queue

  def patched_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self._received = _ReceivingQueues()

  def patched_output_stream(self, instruction_id, transform_id):
    stream = output_stream(self, instruction_id, transform_id)
    with self._receive_lock:
      if isinstance(self._received, _ReceivingQueues):
        self._received.outputs[instruction_id].append(stream)
    return stream

  def patched_clean_receiving_queue(self, instruction_id):
    clean_receiving_queue(self, instruction_id)
    with self._receive_lock:
      if isinstance(self._received, _ReceivingQueues):
        self._received.outputs.pop(instruction_id, None)

  channel.__init__ = patched_init
  channel.output_stream = patched_output_stream
  channel._clean_receiving_queue = patched_clean_receiving_queue
  channel._xinfer_flush_when_idle = True
  data_plane.SizeBasedBufferingClosableOutputStream.maybe_flush = _maybe_flush


# The longest an SDK worker holds a bundle's output while it is busy, in ms.
OUTPUT_FLUSH_MS = 10

# The longest a bundle's end waits for Beam's state sampler, in ms.
STATE_SAMPLING_PERIOD_MS = 10


def prepare_sdk_worker():
  """What an SDK worker xinfer's pool starts installs before Beam's harness
  runs: ``install_flush_when_idle`` and ``install_short_state_sampling``."""
  install_flush_when_idle()
  install_short_state_sampling()


def install_short_state_sampling():
  """Makes a bundle's end wait at most ``STATE_SAMPLING_PERIOD_MS`` for Beam's
  state sampler, not up to 200 ms.

  Each bundle starts a sampling thread that sleeps between samples, its sleep
  growing from 2 ms to ``sampling_period_ms`` (200 by default); the bundle's
  end sets a flag and joins the thread, so it waits out the current sleep:
  on average 100 ms for a bundle longer than a second, on every bundle of a
  Python stage (py-spy: ``StateSampler.stop``, ``Thread.join``). The sampler
  only measures time per step, so sampling more often costs a wake-up per
  period and nothing else. Patches the default of
  ``statesampler.StateSampler.__init__``'s ``sampling_period_ms``, which
  ``BundleProcessor`` leaves to it.
  """
  init = statesampler.StateSampler.__init__
  defaulted = [
      p.name for p in inspect.signature(init).parameters.values()
      if p.default is not inspect.Parameter.empty
  ]
  defaults = list(init.__defaults__)
  defaults[defaulted.index('sampling_period_ms')] = STATE_SAMPLING_PERIOD_MS
  init.__defaults__ = tuple(defaults)


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
  channel = data_plane._GrpcDataChannel  # pylint: disable=protected-access
  for name in ('_receiving_queue', '_clean_receiving_queue', 'output_stream',
               'input_elements'):
    if not callable(getattr(channel, name, None)):
      found.append(f'_GrpcDataChannel.{name} is gone: install_flush_when_idle '
                   'patches nothing')
  if not hasattr(channel(), '_received'):
    found.append('_GrpcDataChannel has no _received queues: '
                 'install_flush_when_idle patches nothing')
  stream = data_plane.SizeBasedBufferingClosableOutputStream()
  if not hasattr(stream, '_size_flush_threshold'):
    found.append('SizeBasedBufferingClosableOutputStream has no '
                 '_size_flush_threshold: install_flush_when_idle fails')
  sampler = inspect.signature(statesampler.StateSampler.__init__)
  if 'sampling_period_ms' not in sampler.parameters:
    found.append('StateSampler takes no sampling_period_ms: '
                 'install_short_state_sampling patches nothing')
  return found
