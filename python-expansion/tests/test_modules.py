import importlib

import pytest

from xinfer import modules


@pytest.fixture(autouse=True)
def restore_allowlist():
  saved = modules.allowed()
  yield
  modules.configure(saved)


def test_the_default_allows_the_examples_and_their_submodules():
  modules.configure(None)
  assert modules.allowed() == modules.DEFAULT_ALLOWED == ('xinfer.examples', )
  modules.check('xinfer.examples', 'preprocess', 'xinfer.examples:f')
  modules.check('xinfer.examples.hooks', 'preprocess',
                'xinfer.examples.hooks:f')


@pytest.mark.parametrize('module_name',
                         ['os', 'xinfer', 'xinfer.examples_evil', 'xinfer.e'])
def test_other_modules_are_refused_with_the_fix(module_name):
  modules.configure(None)
  with pytest.raises(PermissionError) as e:
    modules.check(module_name, 'model_class', f'{module_name}:X')
  message = str(e.value)
  assert f"model_class '{module_name}:X' is in module '{module_name}'" in message
  assert '(allowed: xinfer.examples)' in message
  assert f'--xinferAllowedModules={module_name}' in message
  assert '--allowed-modules' in message and 'XINFER_ALLOWED_MODULES' in message


def test_configure_adds_to_the_default():
  assert modules.configure(['my_pkg', ' other.hooks ', '', 'my_pkg'
                            ]) == ('xinfer.examples', 'my_pkg', 'other.hooks')
  assert modules.configure('a,b') == ('xinfer.examples', 'a', 'b')
  modules.check('a.sub', 'preprocess', 'a.sub:f')
  modules.check('b', 'preprocess', 'b:f')
  with pytest.raises(PermissionError):
    modules.check('my_pkg', 'preprocess', 'my_pkg:f')


@pytest.mark.parametrize('name', ['my_pkg.*', 'my-pkg', 'a..b', '.a', 'class'])
def test_configure_refuses_a_name_that_is_not_a_module(name):
  before = modules.allowed()
  with pytest.raises(ValueError) as e:
    modules.configure(['ok', name])
  assert str(e.value).startswith(
      f"RunInference: '{name}' in --xinferAllowedModules is not a Python "
      'module name.')
  assert 'without wildcards' in str(e.value)
  assert modules.allowed() == before


def test_the_env_var_is_read_at_import(monkeypatch):
  monkeypatch.setenv(modules.ENV, 'my_pkg, other.hooks')
  importlib.reload(modules)
  assert modules.allowed() == ('xinfer.examples', 'my_pkg', 'other.hooks')
  monkeypatch.setenv(modules.ENV, 'bad*')
  with pytest.raises(ValueError, match="'bad\\*' in XINFER_ALLOWED_MODULES"):
    importlib.reload(modules)
  monkeypatch.delenv(modules.ENV)
  importlib.reload(modules)
  assert modules.allowed() == modules.DEFAULT_ALLOWED
