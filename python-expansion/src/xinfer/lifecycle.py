"""A process xinfer starts ends with the process that owns it.

Light on purpose (no Beam, no gRPC): the benchmark's model server uses it too.
"""

import logging
import os
import threading
from typing import Optional

_LOGGER = logging.getLogger(__name__)


def watch_parent(parent_pid: Optional[int],
                 stop: threading.Event,
                 *,
                 or_reparented: bool = False):
  """Sets ``stop`` when the process ``parent_pid`` is gone. Without a pid and
  with ``or_reparented``, when this process is re-parented (the process that
  started it died); without either, never."""
  original_ppid = os.getppid()

  def gone() -> bool:
    if not parent_pid:
      return or_reparented and os.getppid() != original_ppid
    try:
      os.kill(parent_pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      pass
    return False

  def watch():
    while not stop.wait(1.0):
      if gone():
        _LOGGER.warning('Parent process %s is gone; stopping.', parent_pid
                        or original_ppid)
        stop.set()

  if parent_pid or or_reparented:
    threading.Thread(target=watch, name='xinfer-parent-watch',
                     daemon=True).start()
