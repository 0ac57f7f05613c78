"""The expansion service as Java meets it: a process, its ready line, its allowlist."""
import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.transforms import external
from apache_beam.transforms import fully_qualified_named_transform as fqn

from xinfer import services


@pytest.fixture(scope='module')
def expansion_service():
  process = subprocess.Popen([
      sys.executable, '-m', 'xinfer.services', '--parent-pid',
      str(os.getpid())
  ],
                             stdout=subprocess.PIPE,
                             text=True)
  try:
    line = process.stdout.readline()
    assert line.startswith(services.READY_PREFIX), line
    yield json.loads(line[len(services.READY_PREFIX):])
  finally:
    process.terminate()
    process.wait(timeout=30)


def _expand(address, name, **kwargs):
  payload = fqn.FullyQualifiedNamedTransform(name, (), kwargs)
  urn, proto = payload.to_runner_api_parameter(None)
  p = TestPipeline()
  return (p
          | beam.Create([beam.Row(id=np.int64(1), features=[np.float32(1.0)])])
          | external.ExternalTransform(urn, proto.SerializeToString(), address))


def test_binds_loopback_by_default(expansion_service):
  assert expansion_service['expansion_service'].startswith('127.0.0.1:')
  assert expansion_service['worker_pool'].startswith('127.0.0.1:')


def test_ready_line_reports_the_versions(expansion_service):
  assert expansion_service['beam_version'] == beam.__version__
  assert expansion_service['xinfer_version']


def test_refuses_names_off_the_allowlist(expansion_service):
  with pytest.raises(Exception, match='"os.system" is not on the allowlist'):
    _expand(expansion_service['expansion_service'], 'os.system', command='true')


def test_refuses_inline_python_source(expansion_service):
  with pytest.raises(Exception, match='"__callable__" is not on the allowlist'):
    _expand(expansion_service['expansion_service'],
            '__callable__',
            source='def f(p): return p')


def test_expands_row_inference_with_an_external_environment(
    expansion_service, model_dir):
  out = _expand(expansion_service['expansion_service'],
                'xinfer.transforms.RowInference',
                model_uri=model_dir,
                feature_field='features')
  environments = out.pipeline.to_runner_api().components.environments
  external_configs = [
      e.payload for e in environments.values()
      if e.urn == 'beam:env:external:v1'
  ]
  assert external_configs, environments
  assert any(expansion_service['worker_pool'].encode() in payload
             for payload in external_configs)


def test_missing_model_fails_expansion_with_its_path(expansion_service,
                                                     tmp_path):
  with pytest.raises(Exception, match='no model at'):
    _expand(expansion_service['expansion_service'],
            'xinfer.transforms.RowInference',
            model_uri=str(tmp_path / 'missing'),
            feature_field='features')


def test_stop_all_stops_the_sdk_workers():
  pool = services.WorkerPool()
  worker = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(60)'])
  pool._worker_processes['w1'] = worker
  pool.stop_all()
  assert worker.poll() is not None
  assert not pool._worker_processes


def test_services_exit_when_their_parent_is_gone():
  parent = subprocess.Popen(
      [sys.executable, '-c', 'import time; time.sleep(1)'])
  process = subprocess.Popen([
      sys.executable, '-m', 'xinfer.services', '--parent-pid',
      str(parent.pid)
  ],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             text=True)
  try:
    assert process.stdout.readline().startswith(services.READY_PREFIX)
    parent.wait()
    assert process.wait(timeout=30) == 0
    assert 'is gone; stopping' in process.stderr.read()
  finally:
    process.kill()
