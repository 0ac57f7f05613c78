"""Fails, naming the hook, when the installed Beam no longer has what
xinfer.beam_compat reaches into (see CONTRIBUTING.md, "Upgrading Beam")."""

from apache_beam.transforms import fully_qualified_named_transform

from xinfer import beam_compat
from xinfer import metrics


def test_every_beam_hook_finds_its_target():
  assert beam_compat.problems() == [], (
      'Beam internals xinfer relies on changed; follow CONTRIBUTING.md '
      '"Upgrading Beam"')


def test_the_block_path_reports_beams_run_inference_metrics_by_their_names():
  assert beam_compat.beam_run_inference_metric_names() == sorted(
      metrics.BEAM_COUNTERS + metrics.BEAM_DISTRIBUTIONS)


def test_the_exact_allowlist_refuses_a_name_a_glob_would_match():
  cls = fully_qualified_named_transform.FullyQualifiedNamedTransform
  original = cls.__dict__['_check_allowed']
  try:
    beam_compat.install_exact_allowlist(['xinfer.transforms.RowInference'])
    cls._check_allowed('xinfer.transforms.RowInference')
    try:
      cls._check_allowed('xinfer.transforms.RowInference*')
    except ValueError as e:
      assert 'not on the allowlist' in str(e)
    else:
      raise AssertionError('a wildcard name was allowed')
  finally:
    cls._check_allowed = original


def _run_in_a_fresh_worker_process(code):
  """Runs ``code`` after ``prepare_sdk_worker``, as an SDK worker of xinfer's
  pool does, in a process of its own (the hooks patch Beam for the process)."""
  import subprocess
  import sys
  import textwrap
  prelude = 'from xinfer import beam_compat\nbeam_compat.prepare_sdk_worker()\n'
  done = subprocess.run([sys.executable, '-c', prelude + textwrap.dedent(code)],
                        capture_output=True,
                        text=True,
                        timeout=120,
                        check=False)
  assert done.returncode == 0, done.stdout + done.stderr


def test_the_sdk_worker_command_prepares_the_worker():
  assert 'beam_compat.prepare_sdk_worker();' in beam_compat.SDK_WORKER_COMMAND


def test_a_bundle_sends_its_outputs_when_it_runs_out_of_input():
  _run_in_a_fresh_worker_process('''
      import queue, threading
      from apache_beam.portability.api import beam_fn_api_pb2
      from apache_beam.runners.worker import data_plane

      channel = data_plane._GrpcDataChannel()
      out = channel.output_stream('bundle', 'out')
      received = channel._receiving_queue('bundle')
      received.put(beam_fn_api_pb2.Elements.Data(
          instruction_id='bundle', transform_id='in', data=b'in-1'))
      inputs = channel.input_elements('bundle', ['in'])
      assert next(inputs).data == b'in-1'
      out.write(b'out-1')
      out.maybe_flush()
      assert channel._to_send.empty(), 'sent before the input ran out'

      # The bundle's thread now waits for more input: it sends what it has.
      waiting = threading.Thread(target=lambda: list(inputs))
      waiting.start()
      sent = channel._to_send.get(timeout=10)
      assert sent.data == b'out-1', sent
      received.put(beam_fn_api_pb2.Elements.Data(
          instruction_id='bundle', transform_id='in', is_last=True))
      waiting.join(10)
      assert not waiting.is_alive()
      # The bundle is forgotten once its input has ended.
      assert 'bundle' not in channel._received.outputs
  ''')


def test_a_busy_bundle_sends_its_outputs_at_least_every_flush_period():
  _run_in_a_fresh_worker_process('''
      import time
      from apache_beam.runners.worker import data_plane

      channel = data_plane._GrpcDataChannel()
      out = channel.output_stream('bundle', 'out')
      out.write(b'a')
      out.maybe_flush()
      assert channel._to_send.empty()
      time.sleep(beam_compat.OUTPUT_FLUSH_MS / 1000 + 0.01)
      out.write(b'b')
      out.maybe_flush()
      assert channel._to_send.get_nowait().data == b'ab'
  ''')


def test_a_bundles_end_waits_briefly_for_the_state_sampler():
  _run_in_a_fresh_worker_process('''
      import time
      from apache_beam.runners.worker import statesampler
      from apache_beam.utils import counters

      sampler = statesampler.StateSampler('stage', counters.CounterFactory())
      sampler.start()
      # A bundle of a second: Beam's sampler, its sleeps grown from 2 ms by
      # 1.2x each, is then 137 ms into one (measured, Beam 2.62).
      time.sleep(1.0)
      started = time.monotonic()
      sampler.stop()
      waited = time.monotonic() - started
      assert waited < 0.05, f'a bundle end waited {waited:.3f} s for the sampler'
  ''')
