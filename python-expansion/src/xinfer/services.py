"""xinfer's Python services: the expansion service and the worker pool.

Both bind 127.0.0.1 unless told otherwise, and serve only callers that hold
their secret (``xinfer.security``). The expansion service expands only the
transforms in ``xinfer.transforms.EXPANDABLE`` and stamps them with an EXTERNAL
environment pointing at a worker pool, with the pool's secret, so the Python
stages run in this venv (TensorFlow and the model importable) and never in
Docker.

    xinfer-expansion-service --port 8097 --secret-file ~/.xinfer-secret
    xinfer-worker-pool --port 50000 --secret-file pool.secret
    xinfer-expansion-service --secret-file ~/.xinfer-secret \\
        --worker-pool 127.0.0.1:50000 --worker-pool-secret-file pool.secret

Java's PythonServices starts ``python -m xinfer.services --secret-stdin`` and
writes a fresh secret on its standard input.

On start each prints one line ``XINFER_READY {json}`` with the addresses it
serves, which is what the Java side waits for; later ``XINFER_NOTICE text``
lines are what an operator must see (a worker that died), which the Java side
logs as warnings.
"""

import argparse
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Dict, List, Optional, Sequence, Tuple

import grpc
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.portability.api import beam_expansion_api_pb2
from apache_beam.portability.api import beam_expansion_api_pb2_grpc
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.portability import expansion_service
from apache_beam.utils import thread_pool_executor

from xinfer import beam_compat
from xinfer import deadlines
from xinfer import lifecycle
from xinfer import modules
from xinfer import security
from xinfer import transforms

_LOGGER = logging.getLogger('xinfer.services')

READY_PREFIX = 'XINFER_READY '
NOTICE_PREFIX = 'XINFER_NOTICE '
DEFAULT_HOST = '127.0.0.1'


class AllowlistedExpansionService(expansion_service.ExpansionServiceServicer):
  """Expands only the transforms on the allowlist, from requests that
  ``security.check_expansion_request`` accepts (checked before Beam decodes
  anything in them)."""
  def __init__(self, options, allowlist: Sequence[str]):
    super().__init__(options)
    self._allowlist = tuple(allowlist)
    beam_compat.install_exact_allowlist(self._allowlist)

  def Expand(self, request, context=None):
    try:
      security.check_expansion_request(request, self._allowlist, _signature_of)
    except security.Refused as e:
      _LOGGER.warning('Refused an expansion request: %s', e)
      return beam_expansion_api_pb2.ExpansionResponse(
          error=f'xinfer expansion service: refused: {e}.')
    response = super().Expand(request, context)
    # Beam lists artifacts to stage (the venv's pip freeze, for one); the pool's
    # workers run in this venv and stage nothing, and there is no artifact
    # service to fetch them from.
    for environment in response.components.environments.values():
      del environment.dependencies[:]
    return response

  def DiscoverSchemaTransform(self, request, context=None):
    return beam_expansion_api_pb2.DiscoverSchemaTransformResponse(
        error='xinfer expansion service: schema transforms are not served.')

  def artifact_service(self):
    raise NotImplementedError(
        'xinfer stages no artifacts and serves no artifact service.')


def _signature_of(name: str) -> inspect.Signature:
  module, _, attribute = name.rpartition('.')
  if module != transforms.__name__:
    raise security.Refused(f'"{name}" is not one of xinfer\'s transforms')
  return inspect.signature(getattr(transforms, attribute))


def _is_loopback(url: str) -> bool:
  host = url.rsplit(':', 1)[0].strip('[]')
  return host in ('127.0.0.1', 'localhost', '::1') or host.startswith('127.')


class WorkerPool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
  """Starts Python SDK workers in this venv for runners that hold the pool's
  secret.

  A request to start a worker must carry the secret in its ``xinfer_token``
  parameter (Beam's runners send the EXTERNAL environment's parameters, where
  the expansion service put it) and name a control endpoint on this machine's
  loopback (the runner beside this pool) unless ``allow_remote_runners``. A
  worker is stopped only on request of the connection that started it; it also
  stops by itself when its runner closes the control stream.
  """
  def __init__(self,
               secret: str,
               allowed_modules: Sequence[str] = (),
               allow_remote_runners: bool = False):
    self._secret = secret
    self._allow_remote_runners = allow_remote_runners
    self._workers: Dict[str, Tuple[subprocess.Popen, str]] = {}
    self._lock = threading.Lock()
    self._env = dict(os.environ)
    self._env[modules.ENV] = ','.join(allowed_modules)
    self._watcher = threading.Thread(target=self._watch_workers,
                                     name='xinfer-worker-watch',
                                     daemon=True)
    self._watcher.start()

  def _watch_workers(self, interval: float = 0.25):
    """Reports a worker that ends without being asked to stop: its runner's
    bundles on it fail, and the runner must recover (Flink restarts the job
    from its last checkpoint and asks this pool for a new worker)."""
    while True:
      time.sleep(interval)
      self.reap_dead_workers()

  def reap_dead_workers(self) -> List[str]:
    """Forgets workers that ended by themselves; logs and returns the ids of
    those that failed (a worker whose runner closed its control stream exits
    with 0, which is how a job ends)."""
    with self._lock:
      dead = [(worker_id, process)
              for worker_id, (process, _) in self._workers.items()
              if process.poll() is not None]
      for worker_id, _ in dead:
        del self._workers[worker_id]
    dead = [(w, p) for w, p in dead if p.returncode != 0]
    for worker_id, process in dead:
      _report_death(worker_id, process)
    return [worker_id for worker_id, _ in dead]

  def StartWorker(self, request, context):
    if not security.tokens_match(request.params.get(security.POOL_PARAM),
                                 self._secret):
      _LOGGER.warning(
          'Refused to start SDK worker %s: the request does not '
          'carry the pool\'s secret.', request.worker_id)
      return beam_fn_api_pb2.StartWorkerResponse(error=(
          'xinfer worker pool: refused: the request does not carry the '
          f'pool\'s secret (the "{security.POOL_PARAM}" parameter of the '
          'EXTERNAL environment). Give the pipeline the secret file the pool '
          'was started with: --xinferWorkerPoolSecretFile.'))
    url = request.control_endpoint.url
    if not self._allow_remote_runners and not _is_loopback(url):
      _LOGGER.warning('Refused to start SDK worker %s for control endpoint %s',
                      request.worker_id, url)
      return beam_fn_api_pb2.StartWorkerResponse(error=(
          f'xinfer worker pool: refused: the control endpoint {url} is not on '
          'this machine\'s loopback; the pool serves the runner beside it '
          '(start it with --allow-remote-runners to serve others).'))
    command = [
        sys.executable,
        '-c',
        beam_compat.SDK_WORKER_COMMAND.format(url=url,
                                              worker_id=request.worker_id),
    ]
    try:
      _LOGGER.info('Starting SDK worker %s', request.worker_id)
      process = subprocess.Popen(command,
                                 stdout=sys.stderr,
                                 close_fds=True,
                                 env=self._env)
      with self._lock:
        self._workers[request.worker_id] = (process, context.peer())
      return beam_fn_api_pb2.StartWorkerResponse()
    except Exception:  # pylint: disable=broad-except
      return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())

  def StopWorker(self, request, context):
    with self._lock:
      process, peer = self._workers.get(request.worker_id, (None, None))
      if process is None:
        return beam_fn_api_pb2.StopWorkerResponse()
      if peer != context.peer():
        _LOGGER.warning(
            'Not stopping SDK worker %s for %s: it was started by another '
            'connection (%s); it stops when its runner closes its control '
            'stream.', request.worker_id, context.peer(), peer)
        return beam_fn_api_pb2.StopWorkerResponse()
      del self._workers[request.worker_id]
    if process.poll() is not None and process.returncode != 0:
      # Dead before its runner let it go (the runner stops a failed job's workers at once).
      _report_death(request.worker_id, process)
      return beam_fn_api_pb2.StopWorkerResponse()
    _LOGGER.info('Stopping SDK worker %s', request.worker_id)
    beam_compat.stop_worker_process(process, timeout=5)
    return beam_fn_api_pb2.StopWorkerResponse()

  def stop_all(self):
    with self._lock:
      workers, self._workers = list(self._workers.values()), {}
    for process, _ in workers:
      beam_compat.stop_worker_process(process, timeout=5)


def _report_death(worker_id: str, process: subprocess.Popen):
  code = process.returncode
  how = (f'killed by signal {-code}' if code < 0 else f'exit code {code}')
  if code == deadlines.BUNDLE_TIMEOUT_EXIT:
    how += f': a batch ran past {deadlines.FLAG}; its log says which stage'
  message = (
      f'xinfer worker pool: SDK worker {worker_id} (pid {process.pid}) died '
      f'({how}) while its runner still used it. The bundles it ran fail; '
      'the runner restarts them (Flink: the job, from its last checkpoint) '
      'and this pool starts a new worker when asked.')
  _LOGGER.warning('%s', message)
  _notice(message)


def _notice(message: str):
  """A line for the operator: the Java side logs it as a warning."""
  print(NOTICE_PREFIX + message, flush=True)


def _server(*interceptors):
  return grpc.server(thread_pool_executor.shared_unbounded_instance(),
                     interceptors=interceptors,
                     options=[("grpc.http2.max_pings_without_data", 0),
                              ("grpc.http2.max_ping_strikes", 0)])


def _bind(server, host: str, port: int, what: str) -> str:
  bound = server.add_insecure_port(f'{host}:{port}')
  if not bound:
    raise SystemExit(
        f'xinfer: could not bind the {what} to {host}:{port}. Is the port in '
        'use? Choose another with --port, or 0 for any free port.')
  return f'{host}:{bound}'


def start_worker_pool(host: str,
                      port: int,
                      secret: str,
                      allowed_modules: Sequence[str] = (),
                      allow_remote_runners: bool = False):
  pool = WorkerPool(secret, allowed_modules, allow_remote_runners)
  server = _server()
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
      pool, server)
  address = _bind(server, host, port, 'worker pool')
  server.start()
  return address, server, pool


def start_expansion_service(host: str, port: int, secret: str,
                            worker_pool_address: str, worker_pool_secret: str):
  """The expansion service on ``host:port``, serving callers with ``secret``;
  the transforms it expands run on the worker pool at ``worker_pool_address``,
  which checks ``worker_pool_secret``."""
  environment = json.dumps({
      'url': worker_pool_address,
      'params': {
          security.POOL_PARAM: worker_pool_secret
      }
  })
  options = PipelineOptions([
      '--experiments=beam_fn_api',
      '--sdk_location=container',
      '--environment_type=EXTERNAL',
      f'--environment_config={environment}',
  ])
  pickler.set_library(options.view_as(SetupOptions).pickle_library)
  server = _server(security.TokenInterceptor(secret, 'expansion service'))
  beam_expansion_api_pb2_grpc.add_ExpansionServiceServicer_to_server(
      AllowlistedExpansionService(options, transforms.EXPANDABLE), server)
  address = _bind(server, host, port, 'expansion service')
  server.start()
  return address, server


def _announce(**addresses):
  """The ready line: addresses, and the versions the Java side checks against its own."""
  import apache_beam
  import xinfer
  addresses.update(beam_version=apache_beam.__version__,
                   xinfer_version=xinfer.__version__)
  print(READY_PREFIX + json.dumps(addresses), flush=True)


def _private_temp_dir() -> str:
  """A folder only this user can read for this process's and its workers' temp
  files (Beam makes one per expansion and never removes it), removed by
  ``_serve`` when the services stop."""
  path = tempfile.mkdtemp(prefix='xinfer-services-')
  tempfile.tempdir = path
  os.environ['TMPDIR'] = path
  return path


def _serve(servers, pools, parent_pid: Optional[int], temp_dir: str):
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  signal.signal(signal.SIGINT, lambda *_: stop.set())
  lifecycle.watch_parent(parent_pid, stop)
  stop.wait()
  for pool in pools:
    pool.stop_all()
  for server in servers:
    server.stop(grace=1)
  shutil.rmtree(temp_dir, ignore_errors=True)


def _arguments(prog: str, description: str, expansion: bool):
  parser = argparse.ArgumentParser(prog=prog, description=description)
  parser.add_argument('-p',
                      '--port',
                      type=int,
                      default=0,
                      help='port (0: any free port)')
  parser.add_argument(
      '--host',
      default=DEFAULT_HOST,
      help='address to bind (default 127.0.0.1). Another address exposes the '
      'service to the network: callers still need the secret, but it travels '
      'unencrypted.')
  secret = parser.add_mutually_exclusive_group(required=True)
  secret.add_argument(
      '--secret-file',
      help='file holding the secret callers must present (mode 0600; created '
      'with a new secret if missing); give the Java pipeline the same file')
  secret.add_argument(
      '--secret-stdin',
      action='store_true',
      help='read the secret from standard input (what the Java side does)')
  parser.add_argument(
      '--allowed-modules',
      default='',
      help='comma-separated Python modules that hooks and model classes may '
      'come from, besides xinfer.examples (Java: --xinferAllowedModules)')
  parser.add_argument(
      '--parent-pid',
      type=int,
      default=None,
      help='exit when this process ends (set by the Java side that owns us)')
  parser.add_argument('--log-level', default='INFO')
  if expansion:
    parser.add_argument(
        '--worker-pool',
        default=None,
        help='HOST:PORT of a running xinfer-worker-pool; without it, one is '
        'started in this process')
    parser.add_argument(
        '--worker-pool-secret-file',
        default=None,
        help='with --worker-pool: the file holding that pool\'s secret')
    parser.add_argument(
        '--worker-pool-port',
        type=int,
        default=0,
        help='port of the worker pool started in this process (0: any free '
        'port)')
  else:
    parser.add_argument(
        '--allow-remote-runners',
        action='store_true',
        help='start workers for runners on other hosts (default: only for a '
        'control endpoint on 127.0.0.1)')
  return parser


def _allowed_modules(flag: str) -> Sequence[str]:
  names = [name.strip() for name in flag.split(',') if name.strip()]
  modules.configure(names)
  return names


def _start(parser: argparse.ArgumentParser, argv):
  """What both services do first: arguments, logging, the secrets (the second
  one only from standard input), the module allowlist, the private temp dir."""
  args = parser.parse_args(argv)
  logging.basicConfig(level=args.log_level,
                      format='%(asctime)s %(name)s %(levelname)s %(message)s')
  pool_secret = None
  if args.secret_stdin:
    secret, pool_secret = security.read_secrets_from_stdin()
  else:
    secret = security.read_secret_file(args.secret_file, create=True)
  return (args, secret, pool_secret, _allowed_modules(args.allowed_modules),
          _private_temp_dir())


def expansion_service_main(argv=None):
  parser = _arguments('xinfer-expansion-service',
                      'Beam expansion service for xinfer RunInference.',
                      expansion=True)
  args, secret, pool_secret, allowed, temp_dir = _start(parser, argv)
  if args.worker_pool_secret_file:
    pool_secret = security.read_secret_file(args.worker_pool_secret_file,
                                            create=False)
  if args.worker_pool and not pool_secret:
    parser.error('--worker-pool needs --worker-pool-secret-file: the secret '
                 'file that pool was started with')

  servers, pools = [], []
  pool_address = args.worker_pool
  if not pool_address:
    # A secret for the pool of our own from standard input (the Java side passes
    # it, so that services it restarts take the same one), else a new one.
    pool_secret = pool_secret or security.new_secret()
    pool_address, pool_server, pool = start_worker_pool(args.host,
                                                        args.worker_pool_port,
                                                        pool_secret, allowed)
    servers.append(pool_server)
    pools.append(pool)
  address, server = start_expansion_service(args.host, args.port, secret,
                                            pool_address, pool_secret)
  servers.append(server)
  _LOGGER.info('Expansion service on %s (allowlist: %s), worker pool %s',
               address, ', '.join(transforms.EXPANDABLE), pool_address)
  _announce(expansion_service=address, worker_pool=pool_address)
  _serve(servers, pools, args.parent_pid, temp_dir)


def worker_pool_main(argv=None):
  parser = _arguments(
      'xinfer-worker-pool',
      'Beam worker pool running Python SDK workers in this venv.',
      expansion=False)
  args, secret, _, allowed, temp_dir = _start(parser, argv)
  address, server, pool = start_worker_pool(args.host, args.port, secret,
                                            allowed, args.allow_remote_runners)
  _LOGGER.info('Worker pool on %s', address)
  _announce(worker_pool=address)
  _serve([server], [pool], args.parent_pid, temp_dir)


if __name__ == '__main__':
  expansion_service_main()
