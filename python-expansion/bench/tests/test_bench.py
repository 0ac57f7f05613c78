import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from xinfer_bench import measure
from xinfer_bench import model_server


@pytest.fixture(scope='module')
def bench_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('bench'))
  assert sorted(measure.prepare(out)) == sorted(measure.MODELS)
  assert measure.prepare(out) == []  # idempotent
  return out


def test_rows_follow_the_formula_java_uses():
  data = measure.rows(3)
  assert data.shape == (3, 64) and data.dtype == np.float32
  assert data[2, 5] == (31 * 2 + 7 * 5) % 17


def test_identity_model_returns_its_input(bench_dir):
  session = measure.session(os.path.join(bench_dir, 'identity.onnx'))
  data = measure.rows(5)
  np.testing.assert_array_equal(session.run(None, {'x': data})[0], data)


def test_wide_mlp_gives_probabilities(bench_dir):
  session = measure.session(os.path.join(bench_dir, 'wide-mlp.onnx'))
  out = session.run(None, {'x': measure.rows(4)})[0]
  assert out.shape == (4, 10)
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_plain_loop_reports_its_throughput(bench_dir):
  result = measure.plain(os.path.join(bench_dir, 'identity.onnx'), 1000, 100)
  assert result['approach'] == 'plain-python'
  assert result['rows'] == 1000 and result['batch_size'] == 100
  assert result['rows_per_second'] == pytest.approx(1000 / result['seconds'])


def test_report_gives_ratios_to_plain_python_and_memory(tmp_path):
  csv = tmp_path / 'results.csv'
  csv.write_text(','.join(measure.CSV_COLUMNS) + '\n' +
                 'plain-python,m.onnx,256,1000,,0.001,1000000.0,,150\n' +
                 'xinfer-flink,m.onnx,256,1000,1.0,2.0,250000.0,1200,900\n')
  table = measure.report(str(csv))
  assert '| m.onnx | 256 | xinfer-flink | 250,000 | 0.2500 | 1,200 | 900 |' in table
  assert '| m.onnx | 256 | plain-python | 1,000,000 | 1.0000 |  | 150 |' in table


def test_plain_csv_line_has_every_column(bench_dir):
  result = measure.plain(os.path.join(bench_dir, 'identity.onnx'), 100, 10)
  fields = measure.plain_csv_line(result).split(',')
  assert len(fields) == len(measure.CSV_COLUMNS)
  assert float(fields[measure.CSV_COLUMNS.index('python_peak_rss_mb')]) > 0


def test_plot_draws_a_png_per_model(tmp_path):
  csv = tmp_path / 'results.csv'
  csv.write_text(','.join(measure.CSV_COLUMNS) + '\n' +
                 'plain-python,a.onnx,64,1000,,0.001,1000000.0,,150\n' +
                 'xinfer-flink,a.onnx,64,1000,1.0,2.0,250000.0,1200,900\n' +
                 'xinfer-flink,b.onnx,256,1000,1.0,2.0,2500.0,1200,900\n')
  paths = measure.plot_throughput(str(csv), str(tmp_path))
  assert sorted(os.path.basename(p)
                for p in paths) == ['throughput-a.png', 'throughput-b.png']
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_streaming_latency_summary_table_and_plot(tmp_path):
  runs = tmp_path / 'latency.csv'
  runs.write_text(','.join(measure.LATENCY_COLUMNS) + '\n')
  for rate in (500, 1000):
    f = tmp_path / f'run-{rate}.csv'
    # 100 steady records of 1..100 ms; a start-up record that counts nowhere,
    # and two warm-up records that count only in their own p99.
    f.write_text('id,latency_ms,phase\n0,9000.0,startup\n' +
                 '1,700.0,warmup\n2,500.0,warmup\n' +
                 ''.join(f'{i},{i}.0,steady\n' for i in range(3, 103)))
    line = measure.latency_line(str(f), rate, 50, 10)
    assert line == f'{rate},50,10,100,52.0,92.0,101.0,102.0,700.0'
    with open(runs, 'a') as out:
      out.write(line + '\n')
  results = tmp_path / 'results.csv'
  results.write_text(','.join(measure.CSV_COLUMNS) + '\n' +
                     'plain-python,a.onnx,64,1000,,0.001,1000000.0,,150\n')
  table = measure.report(str(results), str(runs))
  assert '| 1000 | 50 | 10 | 100 | 52.0 | 92.0 | 101.0 | 102.0 | 700.0 |' in table
  path = measure.plot_latency(str(runs), str(tmp_path))
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def server(bench_dir):
  """A model server process for identity.onnx on a free port: its ready line."""
  env = dict(os.environ)
  process = subprocess.Popen([
      sys.executable, '-m', 'xinfer_bench', 'serve', '--model',
      os.path.join(bench_dir, 'identity.onnx'), '--port', '0'
  ],
                             stdout=subprocess.PIPE,
                             env=env,
                             text=True)
  try:
    line = process.stdout.readline()
    assert line.startswith(model_server.READY_PREFIX), line
    info = json.loads(line[len(model_server.READY_PREFIX):])
    yield info
  finally:
    process.terminate()
    assert process.wait(timeout=30) == 0  # SIGTERM: a clean exit


def _post(url, body, headers):
  request = urllib.request.Request(url, data=body, headers=headers)
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, dict(response.headers), response.read()
  except urllib.error.HTTPError as e:
    return e.code, dict(e.headers), e.read()


def test_server_returns_the_identity_models_output(server):
  assert server['url'] == f"http://127.0.0.1:{server['port']}/predict"
  data = measure.rows(3)
  status, headers, body = _post(server['url'],
                                data.astype('<f4').tobytes(), {'X-Rows': '3'})
  assert status == 200
  assert headers['X-Rows'] == '3' and headers['X-Columns'] == '64'
  np.testing.assert_array_equal(
      np.frombuffer(body, dtype='<f4').reshape(3, 64), data)


def test_server_rejects_a_malformed_body_with_400(server):
  status, _, body = _post(server['url'], b'\x00' * 10, {'X-Rows': '3'})
  assert status == 400
  assert body.decode() == ('the body has 10 bytes; 3 rows of 64 float32 '
                           'values need 768 (little-endian float32, '
                           'row after row)\n')
  status, _, body = _post(server['url'], b'\x00' * 256, {})
  assert status == 400 and b'X-Rows' in body


def test_beam_pipeline_returns_every_row_through_identity(bench_dir):
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to
  from xinfer_bench import beam_pipeline
  model = os.path.join(bench_dir, 'identity.onnx')
  with beam.Pipeline('DirectRunner') as p:
    predictions = beam_pipeline.build(p, model, 10, batch_size=4)
    assert_that(predictions
                | beam.Map(lambda r: np.array_equal(r.example, r.inference)),
                equal_to([True] * 10),
                label='OutputEqualsInput')
    assert_that(predictions | beam.Map(lambda r: tuple(r.inference.tolist())),
                equal_to([tuple(row) for row in measure.rows(10).tolist()]),
                label='EveryRow')


def test_beam_run_counts_its_outputs(bench_dir):
  from apache_beam.options.pipeline_options import PipelineOptions
  from xinfer_bench import beam_pipeline
  seconds = beam_pipeline.run_once(os.path.join(bench_dir, 'wide-mlp.onnx'),
                                   20, 8,
                                   PipelineOptions(['--runner=DirectRunner']))
  assert seconds > 0
  with pytest.raises(ValueError, match='expected 20 outputs, got 19'):
    beam_pipeline._expect(19, 20)


def test_beam_handler_batches_at_the_batch_size_on_one_thread(bench_dir):
  from apache_beam.internal import pickler
  from xinfer_bench import beam_pipeline
  handler = beam_pipeline.OnnxHandler(os.path.join(bench_dir, 'identity.onnx'),
                                      256)
  assert handler.batch_elements_kwargs() == {
      'min_batch_size': 256,
      'max_batch_size': 256
  }
  # It reaches the SDK worker pickled: no onnxruntime options in it.
  handler = pickler.loads(pickler.dumps(handler))
  session = handler.load_model()
  assert session.get_session_options().intra_op_num_threads == 1
  assert session.get_providers() == ['CPUExecutionProvider']


def test_beam_throughput_is_marginal():
  from xinfer_bench import beam_pipeline
  runs = []

  def run(rows):
    runs.append(rows)
    return 3.0 + rows / 1000  # start-up 3 s, then 1000 rows/s

  t_small, t_large, throughput = beam_pipeline.timed(run, 20000)
  assert runs == [1000, 4000, 20000]
  assert (t_small, t_large) == (7.0, 23.0)
  assert throughput == pytest.approx(1000)
  line = beam_pipeline.csv_line({
      'approach': 'beam-python-flink',
      'model': 'identity.onnx',
      'batch_size': 256,
      'rows': 20000,
      'seconds_small': t_small,
      'seconds_large': t_large,
      'rows_per_second': throughput,
      'jvm_peak_rss_mb': 812.4,
      'python_peak_rss_mb': 301.6
  })
  assert line == ('beam-python-flink,identity.onnx,256,20000,7.000,23.000,'
                  '1000.0,812,302')
  assert len(line.split(',')) == len(measure.CSV_COLUMNS)
  with pytest.raises(RuntimeError, match='use more rows'):
    beam_pipeline.timed(lambda rows: 5.0 - rows / 1e6, 20000)
