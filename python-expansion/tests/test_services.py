"""The services as Java meets them (a process, its ready line, its allowlist), and
as an attacker on the same machine meets them: each attack is performed."""
import logging
import json
import os
import subprocess
import sys

import apache_beam as beam
import grpc
import numpy as np
import pytest
from google.protobuf import wrappers_pb2
from apache_beam.internal import pickler
from apache_beam.portability import common_urns
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_artifact_api_pb2
from apache_beam.portability.api import beam_artifact_api_pb2_grpc
from apache_beam.portability.api import beam_expansion_api_pb2
from apache_beam.portability.api import beam_expansion_api_pb2_grpc
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.portability.api import endpoints_pb2
from apache_beam.runners.portability import expansion_service
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.transforms import external
from apache_beam.transforms import fully_qualified_named_transform as fqn

from xinfer import security
from xinfer import services

SECRET = 'a' * 64


def _start(args, secret=SECRET, **kwargs):
  process = subprocess.Popen(
      [sys.executable, '-m', 'xinfer.services', '--secret-stdin'] + args,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      **kwargs)
  process.stdin.write(secret + '\n\n')
  process.stdin.close()
  return process


@pytest.fixture(scope='module')
def expansion_service_process():
  process = _start(['--parent-pid', str(os.getpid())])
  try:
    line = process.stdout.readline()
    assert line.startswith(services.READY_PREFIX), line
    yield json.loads(line[len(services.READY_PREFIX):])
  finally:
    process.terminate()
    process.wait(timeout=30)


def _request(name='xinfer.transforms.RowInference', **kwargs):
  """What a Java pipeline sends: a transform over one Row input, whose
  producer is an Impulse stand-in."""
  payload = fqn.FullyQualifiedNamedTransform(name, (), kwargs)
  urn, proto = payload.to_runner_api_parameter(None)
  p = beam.Pipeline()
  _ = p | 'Create' >> beam.Create(
      [beam.Row(id=np.int64(1), features=[np.float32(1.0)])])
  pipeline_proto = p.to_runner_api()
  create = [
      t for t in pipeline_proto.components.transforms.values()
      if t.unique_name == 'Create'
  ][0]
  pcoll_id = create.outputs['None']
  components = beam_runner_api_pb2.Components()
  components.pcollections[pcoll_id].CopyFrom(
      pipeline_proto.components.pcollections[pcoll_id])
  components.coders.MergeFrom(pipeline_proto.components.coders)
  components.windowing_strategies.MergeFrom(
      pipeline_proto.components.windowing_strategies)
  components.transforms['impulse'].CopyFrom(
      beam_runner_api_pb2.PTransform(
          unique_name='IMPULSE_input',
          spec=beam_runner_api_pb2.FunctionSpec(
              urn=common_urns.primitives.IMPULSE.urn),
          outputs={'input': pcoll_id}))
  return beam_expansion_api_pb2.ExpansionRequest(
      components=components,
      transform=beam_runner_api_pb2.PTransform(
          unique_name='external',
          spec=beam_runner_api_pb2.FunctionSpec(
              urn=urn, payload=proto.SerializeToString()),
          inputs={'input': pcoll_id}),
      namespace='test')


def _expand(address, name, token=SECRET, **kwargs):
  """The expansion response for ``name(**kwargs)``, sent with ``token``."""
  stub = beam_expansion_api_pb2_grpc.ExpansionServiceStub(
      grpc.insecure_channel(address))
  metadata = [(security.HEADER, token)] if token else []
  response = stub.Expand(_request(name, **kwargs),
                         metadata=metadata,
                         timeout=60)
  if response.error:
    raise RuntimeError(response.error)
  return response


def test_binds_loopback_by_default(expansion_service_process):
  assert expansion_service_process['expansion_service'].startswith('127.0.0.1:')
  assert expansion_service_process['worker_pool'].startswith('127.0.0.1:')


def test_ready_line_reports_the_versions(expansion_service_process):
  assert expansion_service_process['beam_version'] == beam.__version__
  assert expansion_service_process['xinfer_version']


def test_refuses_names_off_the_allowlist(expansion_service_process):
  with pytest.raises(Exception, match='"os.system" is not on the allowlist'):
    _expand(expansion_service_process['expansion_service'],
            'os.system',
            command='true')


def test_refuses_inline_python_source(expansion_service_process):
  with pytest.raises(Exception, match='"__callable__" is not on the allowlist'):
    _expand(expansion_service_process['expansion_service'],
            '__callable__',
            source='def f(p): return p')


def test_expands_row_inference_with_an_external_environment(
    expansion_service_process, model_dir):
  out = _expand(expansion_service_process['expansion_service'],
                'xinfer.transforms.RowInference',
                model_uri=model_dir,
                feature_field='features')
  environments = out.components.environments
  external_payloads = [
      beam_runner_api_pb2.ExternalPayload.FromString(e.payload)
      for e in environments.values() if e.urn == 'beam:env:external:v1'
  ]
  assert external_payloads, environments
  pool = [
      p for p in external_payloads
      if p.endpoint.url == expansion_service_process['worker_pool']
  ]
  assert pool, external_payloads
  # The pool's own secret, not the expansion service's.
  token = pool[0].params[security.POOL_PARAM]
  assert len(token) >= security.MIN_SECRET_LENGTH and token != SECRET
  # Nothing to fetch from an artifact service.
  assert not any(e.dependencies for e in environments.values())


def test_missing_model_fails_expansion_with_its_path(expansion_service_process,
                                                     tmp_path):
  with pytest.raises(Exception, match='no model at'):
    _expand(expansion_service_process['expansion_service'],
            'xinfer.transforms.RowInference',
            model_uri=str(tmp_path / 'missing'),
            feature_field='features')


@pytest.mark.parametrize('token', [None, 'b' * 64])
def test_a_caller_without_the_secret_is_refused(expansion_service_process,
                                                model_dir, token):
  with pytest.raises(grpc.RpcError) as refused:
    _expand(expansion_service_process['expansion_service'],
            'xinfer.transforms.RowInference',
            token=token,
            model_uri=model_dir)
  assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
  assert 'does not carry the secret of the run' in refused.value.details()


# --- crafted expansion requests ----------------------------------------------


class _WritesMarker:
  """Unpickling this writes a marker file: the attack's side effect."""
  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (_write_marker, (self.marker, ))


def _write_marker(path):
  with open(path, 'w') as f:
    f.write('pwned')
  return beam.Map(lambda x: x)


def _valid_request(model_dir):
  return _request(model_uri=model_dir)


def _bytes_value(value):
  return wrappers_pb2.BytesValue(value=value).SerializeToString()


def _pickled_producer(request, marker):
  transform = request.components.transforms['impulse']
  transform.spec.urn = python_urns.PICKLED_TRANSFORM
  transform.spec.payload = pickler.dumps(_WritesMarker(marker))


def _pickled_coder(request, marker):
  pcoll = next(iter(request.components.pcollections.values()))
  request.components.coders['evil'].CopyFrom(
      beam_runner_api_pb2.Coder(spec=beam_runner_api_pb2.FunctionSpec(
          urn=python_urns.PICKLED_CODER,
          # Beam's serialize_coder form: class name, '$', the pickle.
          payload=_bytes_value(
              b'Coder$' +
              pickler.dumps(_WritesMarker(marker), use_zlib=True)))))
  pcoll.coder_id = 'evil'


def _pickled_window_fn(request, marker):
  pcoll = next(iter(request.components.pcollections.values()))
  strategy = request.components.windowing_strategies[
      pcoll.windowing_strategy_id]
  strategy.window_fn.urn = python_urns.PICKLED_WINDOWFN
  strategy.window_fn.payload = _bytes_value(pickler.dumps(
      _WritesMarker(marker)))


@pytest.mark.parametrize(
    'attack', [_pickled_producer, _pickled_coder, _pickled_window_fn])
def test_a_pickled_component_is_refused_before_it_is_decoded(
    attack, model_dir, tmp_path):
  marker = tmp_path / 'marker'
  request = _valid_request(model_dir)
  attack(request, marker)
  # The attack is real: Beam's own servicer runs the pickle.
  expansion_service.ExpansionServiceServicer().Expand(request)
  assert marker.exists()
  marker.unlink()

  servicer = services.AllowlistedExpansionService(
      beam.options.pipeline_options.PipelineOptions([]),
      ['xinfer.transforms.RowInference'])
  response = servicer.Expand(request)
  assert 'refused' in response.error, response.error
  assert not marker.exists()


def test_the_request_java_sends_is_accepted(model_dir):
  servicer = services.AllowlistedExpansionService(
      beam.options.pipeline_options.PipelineOptions([]),
      ['xinfer.transforms.RowInference'])
  response = servicer.Expand(_valid_request(model_dir))
  assert not response.error, response.error


def test_unknown_arguments_are_refused(model_dir):
  request = _valid_request(model_dir)
  payload = fqn.FullyQualifiedNamedTransform('xinfer.transforms.RowInference',
                                             (), {
                                                 'model_uri': model_dir,
                                                 'evil': 'x'
                                             })
  _, proto = payload.to_runner_api_parameter(None)
  request.transform.spec.payload = proto.SerializeToString()
  with pytest.raises(security.Refused, match='no argument.*evil'):
    security.check_expansion_request(request,
                                     ['xinfer.transforms.RowInference'],
                                     services._signature_of)


def test_the_artifact_service_serves_nothing(expansion_service_process):
  channel = grpc.insecure_channel(
      expansion_service_process['expansion_service'])
  stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
  request = beam_artifact_api_pb2.GetArtifactRequest(
      artifact=beam_runner_api_pb2.ArtifactInformation(
          type_urn=common_urns.artifact_types.FILE.urn,
          type_payload=beam_runner_api_pb2.ArtifactFilePayload(
              path='/etc/passwd').SerializeToString()))
  for metadata, code in (([], grpc.StatusCode.UNAUTHENTICATED), ([
      (security.HEADER, SECRET)
  ], grpc.StatusCode.UNIMPLEMENTED)):
    with pytest.raises(grpc.RpcError) as refused:
      for chunk in stub.GetArtifact(request, metadata=metadata, timeout=10):
        assert b'root:' not in chunk.data
    assert refused.value.code() == code


# --- the worker pool ---------------------------------------------------------


@pytest.fixture
def worker_pool():
  address, server, pool = services.start_worker_pool('127.0.0.1', 0, SECRET)
  try:
    yield pool, _pool_stub(address), address
  finally:
    pool.stop_all()
    server.stop(grace=1)


def _pool_stub(address):
  # A channel of its own (no shared subchannel): its own connection.
  return beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(
      grpc.insecure_channel(address,
                            options=[('grpc.use_local_subchannel_pool', 1)]))


def _start_request(token, control='127.0.0.1:1'):
  return beam_fn_api_pb2.StartWorkerRequest(
      worker_id='w1',
      control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=control),
      params={security.POOL_PARAM: token} if token else {})


@pytest.mark.parametrize('token', [None, 'b' * 64])
def test_the_pool_starts_no_worker_without_its_secret(worker_pool, token):
  pool, stub, _ = worker_pool
  response = stub.StartWorker(_start_request(token), timeout=10)
  assert 'refused' in response.error
  assert '--xinferWorkerPoolSecretFile' in response.error
  assert not pool._workers


def test_the_pool_starts_no_worker_for_a_remote_runner(worker_pool):
  pool, stub, _ = worker_pool
  response = stub.StartWorker(_start_request(SECRET, '192.0.2.1:5000'),
                              timeout=10)
  assert 'not on this machine\'s loopback' in response.error
  assert not pool._workers


def test_a_worker_is_stopped_only_by_the_connection_that_started_it(
    worker_pool):
  pool, stub, address = worker_pool
  assert not stub.StartWorker(_start_request(SECRET), timeout=10).error
  process, _ = pool._workers['w1']
  _pool_stub(address).StopWorker(
      beam_fn_api_pb2.StopWorkerRequest(worker_id='w1'), timeout=10)
  assert 'w1' in pool._workers and process.poll() is None
  stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id='w1'), timeout=10)
  assert 'w1' not in pool._workers and process.poll() is not None


def test_stop_all_stops_the_sdk_workers():
  pool = services.WorkerPool(SECRET)
  worker = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(60)'])
  pool._workers['w1'] = (worker, 'peer')
  pool.stop_all()
  assert worker.poll() is not None
  assert not pool._workers


def refused_start(*args) -> str:
  """The services started with ``args``, which must refuse to start: their stderr."""
  process = subprocess.run([sys.executable, '-m', 'xinfer.services', *args],
                           capture_output=True,
                           text=True,
                           timeout=120)
  assert process.returncode != 0, process.stdout
  return process.stderr


def test_services_need_a_secret():
  assert '--secret-file' in refused_start('--port', '0')


def test_a_secret_file_others_can_read_is_refused(tmp_path):
  secret = tmp_path / 'secret'
  secret.write_text(SECRET)
  secret.chmod(0o644)
  assert 'chmod 600' in refused_start('--secret-file', str(secret))


def test_a_missing_secret_file_is_created_private(tmp_path):
  secret = tmp_path / 'secret'
  assert len(security.read_secret_file(str(secret), create=True)) >= 32
  assert secret.stat().st_mode & 0o777 == 0o600


def test_services_exit_when_their_parent_is_gone():
  parent = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(1)'])
  process = _start(['--parent-pid', str(parent.pid)], stderr=subprocess.PIPE)
  try:
    assert process.stdout.readline().startswith(services.READY_PREFIX)
    parent.wait()
    assert process.wait(timeout=30) == 0
    assert 'is gone; stopping' in process.stderr.read()
  finally:
    process.kill()


def test_services_keep_temp_files_private_and_remove_them(model_dir, tmp_path):
  process = _start(['--parent-pid', str(os.getpid())],
                   env=dict(os.environ, TMPDIR=str(tmp_path)))
  try:
    address = json.loads(process.stdout.readline()[len(services.READY_PREFIX):])
    _expand(address['expansion_service'],
            'xinfer.transforms.RowInference',
            model_uri=model_dir)
    (folder, ) = tmp_path.iterdir()
    assert folder.name.startswith('xinfer-services-')
    assert folder.stat().st_mode & 0o777 == 0o700
    # Beam's expansion made its pipeline folder in there.
    assert any(folder.iterdir())
  finally:
    process.terminate()
    process.wait(timeout=30)
  assert not list(tmp_path.iterdir())


def test_a_killed_worker_is_reported_and_forgotten(caplog, capsys):
  pool = services.WorkerPool(SECRET)
  killed = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(60)'])
  finished = subprocess.Popen([sys.executable, '-c', 'pass'])
  pool._workers['w1'] = (killed, 'peer')
  pool._workers['w2'] = (finished, 'peer')
  killed.kill()
  killed.wait(10)
  finished.wait(10)
  with caplog.at_level(logging.WARNING, logger=services.__name__):
    assert pool.reap_dead_workers() == ['w1']
  assert not pool._workers
  # The worker whose runner let it go (exit 0) is not a failure.
  assert [r.getMessage() for r in caplog.records
          if 'w2' in r.getMessage()] == []
  message = next(r.getMessage() for r in caplog.records
                 if 'w1' in r.getMessage())
  assert 'killed by signal 9' in message
  assert 'last checkpoint' in message
  # The Java side logs the notice lines of the services' output as warnings.
  assert services.NOTICE_PREFIX + message in capsys.readouterr().out.splitlines(
  )


def test_a_worker_dead_when_its_runner_stops_it_is_reported(
    worker_pool, monkeypatch):
  pool, stub, _ = worker_pool
  notices = []
  monkeypatch.setattr(services, '_notice', notices.append)
  assert not stub.StartWorker(_start_request(SECRET), timeout=10).error
  process, _ = pool._workers['w1']
  process.kill()
  process.wait(10)
  stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id='w1'), timeout=10)
  assert 'w1' not in pool._workers
  assert len(notices) == 1 and 'SDK worker w1' in notices[0], notices
  assert 'killed by signal 9' in notices[0]


def test_the_own_pool_takes_the_secret_given_on_stdin():
  """The Java side passes the pool's secret, so that services it restarts after
  a crash serve the running jobs' environments (which carry that secret)."""
  pool_secret = 'c' * 64
  process = subprocess.Popen(
      [sys.executable, '-m', 'xinfer.services', '--secret-stdin'] +
      ['--parent-pid', str(os.getpid())],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True)
  process.stdin.write(SECRET + '\n' + pool_secret + '\n')
  process.stdin.close()
  try:
    line = process.stdout.readline()
    assert line.startswith(services.READY_PREFIX), line
    address = json.loads(line[len(services.READY_PREFIX):])['worker_pool']
    stub = _pool_stub(address)
    assert 'refused' in stub.StartWorker(_start_request(SECRET),
                                         timeout=10).error
    assert not stub.StartWorker(_start_request(pool_secret), timeout=10).error
    stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id='w1'),
                    timeout=10)
  finally:
    process.terminate()
    process.wait(timeout=30)
