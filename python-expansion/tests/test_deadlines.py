"""The batch watchdog: a late batch is acted on with a message that names the
stage, the model, the limit and the flag; a worker that hangs exits."""

import subprocess
import sys
import textwrap
import time

import pytest

from xinfer import deadlines


def _watchdog():
  late = []
  return deadlines.Watchdog(on_expiry=late.append, interval_secs=0.02), late


def test_a_batch_within_its_limit_is_left_alone():
  watchdog, late = _watchdog()
  with watchdog.batch('m', 5, 'inference'):
    time.sleep(0.1)
  time.sleep(0.1)
  assert late == []


def test_no_limit_means_no_watch():
  watchdog, late = _watchdog()
  for limit in (None, 0):
    with watchdog.batch('m', limit, 'inference'):
      time.sleep(0.05)
  assert late == []


def test_a_late_batch_names_its_stage_model_limit_and_the_flag():
  watchdog, late = _watchdog()
  with watchdog.batch('digits-mlp', 0.1, 'preprocessing') as batch:
    batch.stage = 'postprocessing'
    time.sleep(0.4)
  assert len(late) == 1
  message = late[0].message()
  assert "stage 'postprocessing'" in message
  assert 'digits-mlp' in message
  assert '--xinferBundleTimeout=0.1' in message


def test_a_negative_limit_is_refused_naming_the_flag():
  with pytest.raises(ValueError, match='--xinferBundleTimeout'):
    deadlines.check_limit(-1)


def test_a_hanging_batch_ends_the_worker_process_with_its_exit_code():
  code = textwrap.dedent('''
      import time
      from xinfer import deadlines
      with deadlines.batch('m', 0.3, 'inference'):
        time.sleep(30)
      ''')
  started = time.monotonic()
  process = subprocess.run([sys.executable, '-c', code],
                           capture_output=True,
                           text=True,
                           timeout=60)
  assert time.monotonic() - started < 20
  assert process.returncode == deadlines.BUNDLE_TIMEOUT_EXIT
  assert "stage 'inference'" in process.stderr
  assert '--xinferBundleTimeout=0.3' in process.stderr
