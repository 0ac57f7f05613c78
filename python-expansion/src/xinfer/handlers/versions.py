"""Model versions for refresh: a glob pattern of versions, the newest by natural
name order (``v2`` before ``v10``, like TF Serving's numbered versions)."""

import glob
import os
import re
from typing import Optional


def _natural_key(path: str):
  name = os.path.basename(path.rstrip('/'))
  return [(0, int(t), '') if t.isdigit() else (1, 0, t)
          for t in re.split(r'(\d+)', name)]


def latest_version(pattern: str) -> Optional[str]:
  """The newest model matching a glob pattern: the last in natural name order."""
  matches = [
      m for m in glob.glob(pattern) if not os.path.basename(m).startswith('.')
  ]
  return max(matches, key=_natural_key) if matches else None


def name_of(path: str) -> str:
  return os.path.basename(path.rstrip('/'))
