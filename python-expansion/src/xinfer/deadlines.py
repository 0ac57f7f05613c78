"""Bounds on how long a batch may take in Python (``--xinferBundleTimeout``).

A hook or a model that hangs cannot be interrupted from another thread (it
may sit in C code), and the runner waits for the bundle without a bound. So
when a batch runs past its limit, xinfer logs what hung (stage, model, limit,
the flag) and ends the SDK worker process with exit code
``BUNDLE_TIMEOUT_EXIT``: the runner's bundle fails at once, Flink restarts the
job from its last checkpoint (within its restart limit), and the worker pool
reports the exit with the same reason.

Usage::

  with deadlines.batch('digits-mlp', limit_secs=300) as batch:
    batch.stage = 'preprocessing'
    ...
"""

import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, Optional

_LOGGER = logging.getLogger(__name__)

# The SDK worker's exit code when a batch ran past its limit (EX_TEMPFAIL).
BUNDLE_TIMEOUT_EXIT = 75
FLAG = '--xinferBundleTimeout'


class Batch:
  """One batch under a deadline; ``stage`` names what it is doing."""
  def __init__(self, model_id: str, limit_secs: float, stage: str):
    self.model_id = model_id
    self.limit_secs = limit_secs
    self.stage = stage
    self.deadline = time.monotonic() + limit_secs

  def message(self) -> str:
    return (f'xinfer: RunInference stage \'{self.stage}\' (model '
            f'{self.model_id}) did not finish a batch within '
            f'{self.limit_secs:g} s ({FLAG}={self.limit_secs:g}): the Python '
            'worker stops so that the runner fails the bundle and recovers. '
            f'If batches need longer, raise {FLAG} (seconds; 0: no limit), or '
            'make the batch smaller (withMaxBatchSize).')


def _stop_worker(batch: Batch):
  message = batch.message()
  _LOGGER.error('%s', message)
  sys.stderr.write(message + '\n')
  sys.stderr.flush()
  # Let the log record reach the runner's logging stream.
  logging.shutdown()
  os._exit(BUNDLE_TIMEOUT_EXIT)  # pylint: disable=protected-access


class Watchdog:
  """Checks the batches in progress and acts on the first that is late."""
  def __init__(self,
               on_expiry: Callable[[Batch], None] = _stop_worker,
               interval_secs: float = 0.2):
    self._on_expiry = on_expiry
    self._interval = interval_secs
    self._active: Dict[int, Batch] = {}
    self._lock = threading.Lock()
    self._thread: Optional[threading.Thread] = None

  def batch(self, model_id: str, limit_secs: Optional[float],
            stage: str) -> '_Scope':
    return _Scope(self, model_id, limit_secs, stage)

  def _enter(self, batch: Batch) -> int:
    with self._lock:
      if self._thread is None:
        self._thread = threading.Thread(target=self._watch,
                                        name='xinfer-batch-watchdog',
                                        daemon=True)
        self._thread.start()
      key = id(batch)
      self._active[key] = batch
      return key

  def _exit(self, key: int):
    with self._lock:
      self._active.pop(key, None)

  def _watch(self):
    while True:
      time.sleep(self._interval)
      now = time.monotonic()
      with self._lock:
        late = [b for b in self._active.values() if b.deadline <= now]
        for b in late:
          self._active.pop(id(b), None)
      for b in late:
        self._on_expiry(b)


class _Scope:
  def __init__(self, watchdog: Watchdog, model_id: str,
               limit_secs: Optional[float], stage: str):
    self._watchdog = watchdog
    self._batch = Batch(model_id, limit_secs or 0, stage)
    self._on = bool(limit_secs and limit_secs > 0)
    self._key = None

  def __enter__(self) -> Batch:
    if self._on:
      self._key = self._watchdog._enter(self._batch)  # pylint: disable=protected-access
    return self._batch

  def __exit__(self, *exc):
    if self._key is not None:
      self._watchdog._exit(self._key)  # pylint: disable=protected-access
    return False


WATCHDOG = Watchdog()


def batch(model_id: str, limit_secs: Optional[float], stage: str) -> _Scope:
  """A deadline of ``limit_secs`` (None or 0: none) on the code in the
  ``with`` block, enforced by the process's watchdog."""
  return WATCHDOG.batch(model_id, limit_secs, stage)


def check_limit(limit_secs: Optional[float]):
  if limit_secs is not None and limit_secs < 0:
    raise ValueError(
        f'RunInference: bundle_timeout_secs must be 0 (no limit) or positive, '
        f'got {limit_secs}; set it with {FLAG}.')
