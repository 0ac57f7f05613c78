"""Approach 2 of the benchmark: a pure-Python Beam pipeline with Beam's own
RunInference and ONNX handler, on a portable runner.

``python -m xinfer_bench beam --model FILE --rows N --batch-size B
--job-endpoint HOST:PORT`` runs, on a Beam job server (``./xinfer bench`` starts
Beam's Flink job server with an embedded Flink, parallelism 1):

- the benchmark rows (``xinfer_bench.measure.rows``), one element per row, a float32
  numpy array of 64;
- Beam's ``RunInference`` with ``OnnxModelHandlerNumpy``, batches of exactly
  the batch size, one ONNX Runtime intra-op thread (as the other approaches);
- a count of the predictions that fails the run unless there are N.

As the Java approaches, it runs a warm-up, then N/5 and N rows three times
(``measure.REPETITIONS``), and reports the median marginal throughput
``(N - N/5) / (T(N) - T(N/5))`` with its min and max: job start-up and model
load cancel out.

The SDK worker runs in this process, as with Beam's LOOPBACK environment, but
behind a worker pool bound to 127.0.0.1: Beam's LOOPBACK pool listens on
all interfaces (``[::]``).
"""

import contextlib
import os
import time

import apache_beam as beam
import grpc
from apache_beam.ml.inference.base import RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy
from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.runner import PipelineState
from apache_beam.runners.worker import sdk_worker_main
from apache_beam.runners.worker import worker_pool_main
from apache_beam.utils import thread_pool_executor

from xinfer_bench import measure

APPROACH = 'beam-python-flink'
# Beam's Flink job server runs the pipeline on Beam's portable Flink runner.
RUNNER = 'flink-portable'
HOST = '127.0.0.1'
# As the Java approaches: a job that has not finished in 10 minutes is stalled.
STALL_SECONDS = 600


class OnnxHandler(OnnxModelHandlerNumpy):
  """Beam's ONNX handler, CPU only, with ``threads`` intra-op threads.

  ``onnxruntime.SessionOptions`` cannot be pickled, and the handler travels
  to the SDK worker pickled, so the options are made where the model loads.
  """
  def __init__(self, model_uri: str, batch_size: int, threads: int = 1):
    super().__init__(model_uri,
                     providers=['CPUExecutionProvider'],
                     min_batch_size=batch_size,
                     max_batch_size=batch_size)
    self._threads = threads

  def load_model(self):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = self._threads
    # Beam's load_model passes self._session_options to the session.
    self._session_options = options
    try:
      return super().load_model()
    finally:
      self._session_options = None


def _rows(unused_impulse, n: int):
  yield from measure.rows(n)


def _expect(count: int, n: int) -> int:
  if count != n:
    raise ValueError(f'{APPROACH}: expected {n} outputs, got {count}')
  return count


def build(pipeline, model: str, n: int, batch_size: int, threads: int = 1):
  """Adds the benchmark to ``pipeline``; returns the predictions
  (``PredictionResult``s, one per row)."""
  predictions = (
      pipeline
      | 'Impulse' >> beam.Impulse()
      | 'Rows' >> beam.FlatMap(_rows, n)
      | 'RunInference' >> RunInference(OnnxHandler(model, batch_size, threads)))
  _ = (predictions
       | 'Count' >> beam.combiners.Count.Globally()
       | 'Expect' >> beam.Map(_expect, n))
  return predictions


def run_once(model: str,
             n: int,
             batch_size: int,
             options: PipelineOptions,
             threads: int = 1) -> float:
  """Seconds for one run over ``n`` rows, from submission to the end."""
  pipeline = beam.Pipeline(options=options)
  build(pipeline, model, n, batch_size, threads)
  start = time.perf_counter()
  result = pipeline.run()
  state = result.wait_until_finish(duration=STALL_SECONDS * 1000)
  seconds = time.perf_counter() - start
  if state != PipelineState.DONE:
    result.cancel()
    raise RuntimeError(f'{APPROACH}: the run over {n} rows did not finish in '
                       f'{STALL_SECONDS} s (state {state}): a stalled job')
  return seconds


@contextlib.contextmanager
def loopback_worker_pool(options: PipelineOptions):
  """What Beam's LOOPBACK environment starts (SDK workers as threads of this
  process, with its state cache and data buffer settings), on 127.0.0.1.
  Yields the pool's address for ``--environment_config``."""
  experiments = options.view_as(DebugOptions).experiments or []
  pool = worker_pool_main.BeamFnExternalWorkerPoolServicer(
      use_process=False,
      state_cache_size=sdk_worker_main._get_state_cache_size_bytes(
          options=options),
      data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(
          experiments))
  server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                       options=[("grpc.http2.max_pings_without_data", 0),
                                ("grpc.http2.max_ping_strikes", 0)])
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
      pool, server)
  port = server.add_insecure_port(f'{HOST}:0')
  if not port:
    raise RuntimeError(f'could not bind a worker pool to {HOST}')
  server.start()
  try:
    yield f'{HOST}:{port}'
  finally:
    server.stop(1)


def run_on_job_server(model: str,
                      n: int,
                      batch_size: int,
                      job_endpoint: str,
                      threads: int = 1) -> float:
  """One run on the job server at ``job_endpoint``, parallelism 1."""
  flags = [
      '--runner=PortableRunner',
      f'--job_endpoint={job_endpoint}',
      '--parallelism=1',
      f'--job_name=xinfer-bench-beam-{n}',
  ]
  with loopback_worker_pool(PipelineOptions(flags)) as pool:
    options = PipelineOptions(
        flags + ['--environment_type=EXTERNAL', f'--environment_config={pool}'])
    return run_once(model, n, batch_size, options, threads)


def timed(run, n: int, repetitions: int = measure.REPETITIONS) -> dict:
  """``run(rows)`` after a warm-up, ``repetitions`` times over N/5 and N rows:
  the median pair's ``seconds_small``, ``seconds_large`` and marginal
  ``rows_per_second``, with ``rows_per_second_min`` and ``_max``."""
  small = n // 5
  run(min(small, 1000))  # warm-up: imports, model load, job server JIT
  pairs = []
  for _ in range(repetitions):
    t_small = run(small)
    t_large = run(n)
    if t_large <= t_small:
      raise RuntimeError(
          f'{APPROACH}: {n} rows took no longer than {small} ({t_large:.3f} s, '
          f'{t_small:.3f} s): the rows cost less than the run-to-run noise; '
          'use more rows')
    pairs.append({
        'seconds_small': t_small,
        'seconds_large': t_large,
        'rows_per_second': (n - small) / (t_large - t_small)
    })
  return measure.median_of(pairs)


def benchmark(model: str,
              n: int,
              batch_size: int,
              job_endpoint: str,
              threads: int = 1) -> dict:
  result = timed(
      lambda rows: run_on_job_server(model, rows, batch_size, job_endpoint,
                                     threads), n)
  return dict(result,
              approach=APPROACH,
              runner=RUNNER,
              model=os.path.basename(model),
              batch_size=batch_size,
              rows=n)
