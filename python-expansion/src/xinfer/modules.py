"""The operator's allowlist of the Python modules user code may come from.

A pipeline names hooks (``preprocess``/``postprocess``) and PyTorch model
classes as ``package.module:name``; every Python worker imports and runs them.
Only modules on this list (or inside a package on it) are imported: the
operator allows them when the services start (``--xinferAllowedModules`` in the
Java pipeline options), and the services pass them to the SDK workers they
start in ``XINFER_ALLOWED_MODULES`` (comma-separated), read here at import.
"""

import keyword
import os
from typing import Iterable, Tuple, Union

DEFAULT_ALLOWED = ('xinfer.examples', )
ENV = 'XINFER_ALLOWED_MODULES'
FLAG = '--xinferAllowedModules'

_allowed: Tuple[str, ...] = DEFAULT_ALLOWED


def _is_module_name(name: str) -> bool:
  return all(part.isidentifier() and not keyword.iskeyword(part)
             for part in name.split('.'))


def configure(names: Union[None, str, Iterable[str]],
              source: str = FLAG) -> Tuple[str, ...]:
  """Sets this process's allowlist: the default plus ``names`` (an iterable,
  or one comma-separated string). Returns the new allowlist."""
  if names is None:
    names = ()
  elif isinstance(names, str):
    names = names.split(',')
  result = list(DEFAULT_ALLOWED)
  for name in names:
    name = name.strip()
    if not name:
      continue
    if not _is_module_name(name):
      raise ValueError(
          f"RunInference: '{name}' in {source} is not a Python module name. "
          'Give dotted module or package names, comma-separated, without '
          'wildcards (e.g. my_pkg,other_pkg.hooks).')
    if name not in result:
      result.append(name)
  global _allowed
  _allowed = tuple(result)
  return _allowed


def allowed() -> Tuple[str, ...]:
  """The modules (and packages) user code may come from in this process."""
  return _allowed


def is_allowed(module_name: str) -> bool:
  return any(module_name == entry or module_name.startswith(entry + '.')
             for entry in _allowed)


def check(module_name: str, what: str, path: str):
  """Raises PermissionError unless ``module_name`` is allowed; call it before
  importing the module."""
  if is_allowed(module_name):
    return
  raise PermissionError(
      f"RunInference: {what} '{path}' is in module '{module_name}', which the "
      f"operator has not allowed (allowed: {', '.join(_allowed)}). Allow it "
      f'when the services start: {FLAG}={module_name} in the Java pipeline '
      f'options (xinfer-expansion-service / xinfer-worker-pool '
      f'--allowed-modules {module_name}, or {ENV} for a pool you start by '
      'hand). Hooks and model classes run code in every Python worker.')


configure(os.environ.get(ENV), source=f'{ENV} (set from {FLAG})')
