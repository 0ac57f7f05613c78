"""xinfer's Python services: the expansion service and the worker pool.

Both bind 127.0.0.1 unless told otherwise. The expansion service expands only the
transforms in ``xinfer.transforms.EXPANDABLE`` and stamps them with an EXTERNAL
environment pointing at a worker pool, so the Python stages run in this venv
(TensorFlow and the model importable) and never in Docker.

    xinfer-expansion-service --port 8097            # with its own worker pool
    xinfer-expansion-service --worker-pool 127.0.0.1:50000
    xinfer-worker-pool --port 50000

On start each prints one line ``XINFER_READY {json}`` with the addresses it
serves, which is what the Java side waits for.
"""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from typing import Optional, Sequence

import grpc
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.portability.api import beam_artifact_api_pb2_grpc
from apache_beam.portability.api import beam_expansion_api_pb2
from apache_beam.portability.api import beam_expansion_api_pb2_grpc
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.portability import artifact_service
from apache_beam.runners.portability import expansion_service
from apache_beam.runners.worker import worker_pool_main as beam_worker_pool
from apache_beam.transforms import fully_qualified_named_transform
from apache_beam.utils import thread_pool_executor

from xinfer import transforms

_LOGGER = logging.getLogger('xinfer.services')

READY_PREFIX = 'XINFER_READY '
DEFAULT_HOST = '127.0.0.1'
FULLY_QUALIFIED_NAMED_URN = (
    fully_qualified_named_transform.PYTHON_FULLY_QUALIFIED_NAMED_TRANSFORM_URN)


class AllowlistedExpansionService(expansion_service.ExpansionServiceServicer):
  """Expands only fully-qualified-named transforms on the allowlist."""
  def __init__(self, options, allowlist: Sequence[str]):
    super().__init__(options)
    self._allowlist = tuple(allowlist)

  def Expand(self, request, context=None):
    urn = request.transform.spec.urn
    if urn != FULLY_QUALIFIED_NAMED_URN:
      return beam_expansion_api_pb2.ExpansionResponse(error=(
          f'xinfer expansion service: transform URN {urn!r} is not served; '
          f'it expands only {FULLY_QUALIFIED_NAMED_URN} for '
          f'{", ".join(self._allowlist)}.'))
    return super().Expand(request, context)


def _install_exact_allowlist(names: Sequence[str]):
  # Beam matches one glob with fnmatch; a glob cannot list several exact names, so
  # the check is replaced by an exact-name check (no wildcards at all).
  allowed = frozenset(names)
  cls = fully_qualified_named_transform.FullyQualifiedNamedTransform

  def check_allowed(unused_cls, fully_qualified_name):
    if fully_qualified_name not in allowed:
      raise ValueError(
          f'xinfer expansion service: "{fully_qualified_name}" is not on the '
          f'allowlist ({", ".join(sorted(allowed))}).')

  cls._check_allowed = classmethod(check_allowed)


class WorkerPool(beam_worker_pool.BeamFnExternalWorkerPoolServicer):
  """Beam's worker pool, starting SDK workers with this interpreter.

  Beam's pool runs ``python`` from PATH and pipes stdout nowhere (a chatty worker
  then blocks); this one uses ``sys.executable`` and lets output through.
  """
  def __init__(self):
    super().__init__(use_process=True)

  def StartWorker(self, request, unused_context):
    command = [
        sys.executable,
        '-c',
        'from apache_beam.runners.worker.sdk_worker import SdkHarness; '
        f'SdkHarness({request.control_endpoint.url!r}, '
        f'worker_id={request.worker_id!r}, state_cache_size=0, '
        'data_buffer_time_limit_ms=-1).run()',
    ]
    try:
      _LOGGER.info('Starting SDK worker %s', request.worker_id)
      self._worker_processes[request.worker_id] = subprocess.Popen(
          command, stdout=sys.stderr, close_fds=True)
      return beam_fn_api_pb2.StartWorkerResponse()
    except Exception:  # pylint: disable=broad-except
      return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())

  def stop_all(self):
    for process in list(self._worker_processes.values()):
      beam_worker_pool.kill_process_gracefully(process, timeout=5)
    self._worker_processes.clear()


def _server():
  return grpc.server(thread_pool_executor.shared_unbounded_instance(),
                     options=[("grpc.http2.max_pings_without_data", 0),
                              ("grpc.http2.max_ping_strikes", 0)])


def _bind(server, host: str, port: int, what: str) -> str:
  bound = server.add_insecure_port(f'{host}:{port}')
  if not bound:
    raise SystemExit(
        f'xinfer: could not bind the {what} to {host}:{port}. Is the port in '
        'use? Choose another with --port, or 0 for any free port.')
  return f'{host}:{bound}'


def start_worker_pool(host: str, port: int):
  pool = WorkerPool()
  server = _server()
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
      pool, server)
  address = _bind(server, host, port, 'worker pool')
  server.start()
  return address, server, pool


def start_expansion_service(host: str, port: int, worker_pool_address: str):
  options = PipelineOptions([
      '--experiments=beam_fn_api',
      '--sdk_location=container',
      '--environment_type=EXTERNAL',
      f'--environment_config={worker_pool_address}',
  ])
  pickler.set_library(options.view_as(SetupOptions).pickle_library)
  _install_exact_allowlist(transforms.EXPANDABLE)
  server = _server()
  beam_expansion_api_pb2_grpc.add_ExpansionServiceServicer_to_server(
      AllowlistedExpansionService(options, transforms.EXPANDABLE), server)
  beam_artifact_api_pb2_grpc.add_ArtifactRetrievalServiceServicer_to_server(
      artifact_service.ArtifactRetrievalService(
          artifact_service.BeamFilesystemHandler(None).file_reader), server)
  address = _bind(server, host, port, 'expansion service')
  server.start()
  return address, server


def _watch_parent(parent_pid: Optional[int], stop: threading.Event):
  """Stops this process when the process that started it is gone."""
  if not parent_pid:
    return

  def watch():
    while not stop.wait(1.0):
      try:
        os.kill(parent_pid, 0)
      except ProcessLookupError:
        _LOGGER.warning('Parent process %d is gone; stopping.', parent_pid)
        stop.set()
      except PermissionError:
        pass

  threading.Thread(target=watch, name='xinfer-parent-watch',
                   daemon=True).start()


def _announce(**addresses):
  """The ready line: addresses, and the versions the Java side checks against its own."""
  import apache_beam
  import xinfer
  addresses.update(beam_version=apache_beam.__version__,
                   xinfer_version=xinfer.__version__)
  print(READY_PREFIX + json.dumps(addresses), flush=True)


def _serve(servers, pools, parent_pid: Optional[int]):
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  signal.signal(signal.SIGINT, lambda *_: stop.set())
  _watch_parent(parent_pid, stop)
  stop.wait()
  for pool in pools:
    pool.stop_all()
  for server in servers:
    server.stop(grace=1)


def _common_arguments(parser: argparse.ArgumentParser):
  parser.add_argument(
      '--host',
      default=DEFAULT_HOST,
      help=
      'address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)')
  parser.add_argument(
      '--parent-pid',
      type=int,
      default=None,
      help='exit when this process ends (set by the Java side that owns us)')
  parser.add_argument('--log-level', default='INFO')


def expansion_service_main(argv=None):
  parser = argparse.ArgumentParser(
      prog='xinfer-expansion-service',
      description='Beam expansion service for xinfer RunInference.')
  parser.add_argument('-p',
                      '--port',
                      type=int,
                      default=0,
                      help='port (0: any free port)')
  parser.add_argument(
      '--worker-pool',
      default=None,
      help='HOST:PORT of a running xinfer-worker-pool; without it, one is '
      'started in this process')
  parser.add_argument(
      '--worker-pool-port',
      type=int,
      default=0,
      help='port of the worker pool started in this process (0: any free port)')
  _common_arguments(parser)
  args = parser.parse_args(argv)
  logging.basicConfig(level=args.log_level,
                      format='%(asctime)s %(name)s %(levelname)s %(message)s')

  servers, pools = [], []
  pool_address = args.worker_pool
  if not pool_address:
    pool_address, pool_server, pool = start_worker_pool(args.host,
                                                        args.worker_pool_port)
    servers.append(pool_server)
    pools.append(pool)
  address, server = start_expansion_service(args.host, args.port, pool_address)
  servers.append(server)
  _LOGGER.info('Expansion service on %s (allowlist: %s), worker pool %s',
               address, ', '.join(transforms.EXPANDABLE), pool_address)
  _announce(expansion_service=address, worker_pool=pool_address)
  _serve(servers, pools, args.parent_pid)


def worker_pool_main(argv=None):
  parser = argparse.ArgumentParser(
      prog='xinfer-worker-pool',
      description='Beam worker pool running Python SDK workers in this venv.')
  parser.add_argument('-p',
                      '--port',
                      type=int,
                      default=0,
                      help='port (0: any free port)')
  _common_arguments(parser)
  args = parser.parse_args(argv)
  logging.basicConfig(level=args.log_level,
                      format='%(asctime)s %(name)s %(levelname)s %(message)s')
  address, server, pool = start_worker_pool(args.host, args.port)
  _LOGGER.info('Worker pool on %s', address)
  _announce(worker_pool=address)
  _serve([server], [pool], args.parent_pid)


if __name__ == '__main__':
  expansion_service_main()
