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


def test_plain_loop_reports_the_median_of_three_with_min_and_max(bench_dir):
  result = measure.plain(os.path.join(bench_dir, 'identity.onnx'), 1000, 100)
  assert result['approach'] == 'plain-python' and result['runner'] == 'none'
  assert result['rows'] == 1000 and result['batch_size'] == 100
  assert result['rows_per_second'] == pytest.approx(1000 /
                                                    result['seconds_large'])
  assert (result['rows_per_second_min'] <= result['rows_per_second'] <=
          result['rows_per_second_max'])


def test_plain_command_times_one_loop_as_the_java_bench_runs_it(bench_dir):
  # Bench (Java) runs plain Python this way, a process a round, and reads the
  # line's seconds_large, rows_per_second and python_peak_rss_mb.
  out = subprocess.run([
      sys.executable, '-m', 'xinfer_bench', 'plain', '--csv', '--repetitions=1',
      '--model=' + os.path.join(bench_dir, 'wide-mlp.onnx'), '--rows=2000',
      '--batch-size=100'
  ],
                       check=True,
                       capture_output=True,
                       text=True).stdout.strip().splitlines()[-1]
  by_column = dict(zip(measure.CSV_COLUMNS, out.split(',')))
  assert len(out.split(',')) == len(measure.CSV_COLUMNS)
  assert by_column['approach'] == 'plain-python'
  assert (by_column['rows_per_second'] == by_column['rows_per_second_min'] ==
          by_column['rows_per_second_max'])
  # seconds_large has three decimals: about 0.1 s here.
  assert float(by_column['rows_per_second']) == pytest.approx(
      2000 / float(by_column['seconds_large']), rel=0.05)
  assert float(by_column['python_peak_rss_mb']) > 0


def test_median_of_takes_the_middle_measurement_and_the_extremes():
  result = measure.median_of([{
      'rows_per_second': 30.0,
      'seconds_large': 3
  }, {
      'rows_per_second': 10.0,
      'seconds_large': 1
  }, {
      'rows_per_second': 20.0,
      'seconds_large': 2
  }])
  assert result == {
      'rows_per_second': 20.0,
      'seconds_large': 2,
      'rows_per_second_min': 10.0,
      'rows_per_second_max': 30.0
  }
  with pytest.raises(ValueError, match='no measurement'):
    measure.median_of([])


HEADER = ','.join(measure.CSV_COLUMNS) + '\n'
PLAIN = ('plain-python,none,m.onnx,256,1000,,0.001,1000000.0,900000.0,'
         '1100000.0,,150\n')
FLINK = ('xinfer-flink,flink-portable,m.onnx,256,1000,1.0,2.0,250000.0,'
         '200000.0,300000.0,1200,900\n')


def test_report_gives_runner_median_spread_ratios_and_memory(tmp_path):
  csv = tmp_path / 'results.csv'
  csv.write_text(HEADER + PLAIN + FLINK)
  table = measure.report(str(csv))
  assert ('| m.onnx | 256 | xinfer-flink | flink-portable | 250,000 | '
          '200,000-300,000 | 0.2500 | 1,200 | 900 |') in table
  assert ('| m.onnx | 256 | plain-python | none | 1,000,000 | '
          '900,000-1,100,000 | 1.0000 |  | 150 |') in table


def test_csv_line_has_every_column(bench_dir):
  result = measure.plain(os.path.join(bench_dir, 'identity.onnx'), 100, 10)
  result['python_peak_rss_mb'] = 151.4
  fields = measure.csv_line(result).split(',')
  assert len(fields) == len(measure.CSV_COLUMNS)
  by_column = dict(zip(measure.CSV_COLUMNS, fields))
  assert by_column['runner'] == 'none' and by_column[
      'python_peak_rss_mb'] == '151'
  assert by_column['seconds_small'] == '' and by_column['jvm_peak_rss_mb'] == ''


def test_plot_draws_a_png_per_model(tmp_path):
  csv = tmp_path / 'results.csv'
  csv.write_text(
      HEADER + PLAIN.replace('m.onnx', 'a.onnx') +
      FLINK.replace('m.onnx', 'a.onnx') +
      'xinfer-flink,flink-portable,b.onnx,256,1000,1.0,2.0,2500.0,2000.0,'
      '3000.0,1200,900\n')
  paths = measure.plot_throughput(str(csv), str(tmp_path))
  assert sorted(os.path.basename(p)
                for p in paths) == ['throughput-a.png', 'throughput-b.png']
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def _latency_file(path,
                  steady_ms,
                  sent_step_ms=1.0,
                  startup=1,
                  warmup=2,
                  read_ms=None):
  """A launcher latency file: ``startup`` and ``warmup`` records, then steady
  records with the latencies given, sent ``sent_step_ms`` apart, each read by
  the pipeline ``read_ms`` after its send (None: no read times, as written
  exactly once)."""
  read = '' if read_ms is None else f'{read_ms:.3f}'
  lines = ['id,latency_ms,phase,sent_ms,read_ms']
  lines += [f'{i},9000.0,startup,0.0,{read}' for i in range(startup)]
  lines += [
      f'{startup + i},{700 - 200 * i}.0,warmup,{10 + i}.0,{read}'
      for i in range(warmup)
  ]
  first = startup + warmup
  lines += [
      f'{first + i},{ms},steady,{100 + i * sent_step_ms:.3f},{read}'
      for i, ms in enumerate(steady_ms)
  ]
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def test_streaming_latency_summary_table_and_plot(tmp_path):
  runs = tmp_path / 'latency.csv'
  runs.write_text(','.join(measure.LATENCY_COLUMNS) + '\n')
  for rate in (500, 1000):
    # 100 steady records of 1..100 ms sent 1 ms apart (1,000/s); a start-up
    # record that counts nowhere, and two warm-up records that count only in
    # their own p99.
    f = _latency_file(tmp_path / f'run-{rate}.csv',
                      [float(i) for i in range(1, 101)])
    line = measure.latency_line(f, rate, 50, 10, records=103)
    assert line == f'{rate},50,10,100,50.0,90.0,99.0,100.0,700.0,1000,0,yes,,,,'
    with open(runs, 'a') as out:
      out.write(line + '\n')
  # Read by the pipeline 10 ms after the send: the rest of each latency is
  # after the read.
  f = _latency_file(tmp_path / 'run-read.csv',
                    [float(i) for i in range(11, 111)],
                    read_ms=10.0)
  line = measure.latency_line(f, 1000, 10, 10, records=103)
  assert line.endswith(',yes,10.0,10.0,50.0,99.0')
  with open(runs, 'a') as out:
    out.write(line + '\n')
  results = tmp_path / 'results.csv'
  results.write_text(HEADER + PLAIN)
  table = measure.report(str(results), str(runs))
  assert ('| 1000 | 50 | 10 | 100 | 50.0 | 90.0 | 99.0 | 100.0 | 700.0 | 1000 '
          '| 0 | yes |  |  |  |  |') in table
  assert '| 0 | yes | 10.0 | 10.0 | 50.0 | 99.0 |' in table
  path = measure.plot_latency(str(runs), str(tmp_path))
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_rate_is_sustained_only_when_sent_at_it_all_back_and_p99_under_1s(
    tmp_path):
  fine = [10.0] * 100

  def sustained(steady, rate=1000, records=103, sent_step_ms=1.0):
    f = _latency_file(tmp_path / 'run.csv', steady, sent_step_ms)
    return measure.latency_line(f, rate, 10, 10, records).split(',')[-7:-4]

  assert sustained(fine) == ['1000', '0', 'yes']
  assert sustained(fine, records=110) == ['1000', '7', 'no']  # 7 never back
  assert sustained([10.0] * 98 + [1000.0] * 2) == ['1000', '0', 'no']  # p99
  # Sent at 500/s where 1,000/s was asked for: the driver did not keep up.
  assert sustained(fine, sent_step_ms=2.0) == ['500', '0', 'no']
  assert sustained(fine, rate=1050) == ['1000', '0', 'yes']  # within 5 %
  with pytest.raises(ValueError, match='no steady-state record'):
    measure.latency_line(_latency_file(tmp_path / 'none.csv', []), 1000, 10, 10,
                         3)


def _results(tmp_path, lines):
  csv = tmp_path / 'results.csv'
  rows = []
  for approach, runner, model, median, low, high in lines:
    rows.append(f'{approach},{runner},{model}.onnx,256,1000,1.0,2.0,'
                f'{median},{low},{high},1000,100\n')
  csv.write_text(HEADER + ''.join(rows))
  return str(csv)


def test_ratio_checks_divide_medians_and_bound_them_with_min_and_max(tmp_path):
  csv = _results(tmp_path, [
      ('java-floor-flink', 'flink-portable', 'identity', 100000, 80000, 125000),
      ('xinfer-flink', 'flink-portable', 'identity', 83000, 80000, 100000),
      ('microservice', 'flink-portable', 'identity', 50000, 40000, 60000),
      ('java-floor-spark', 'spark-portable', 'identity', 100000, 90000, 110000),
      ('xinfer-spark', 'flink-portable', 'identity', 90000, 90000, 90000),
      ('plain-python', 'none', 'wide-mlp', 15000, 14000, 16000),
      ('xinfer-flink', 'flink-portable', 'wide-mlp', 14700, 14000, 15000),
  ])
  checks = {
      (c['name'], c['model']): c
      for c in measure.ratio_checks(measure.read_results(csv))
  }
  floor = checks[('xinfer-flink/java-floor-flink', 'identity')]
  assert floor['value'] == pytest.approx(0.83)
  assert floor['low'] == pytest.approx(80000 / 125000)
  assert floor['high'] == pytest.approx(100000 / 80000)
  assert floor['met'] == 'met' and floor['target'] == '>= 0.8'
  assert floor['batch_size'] == '256'
  assert measure.check_line(floor) == (
      'ratio xinfer-flink/java-floor-flink identity 0.83 (batch 256; '
      'flink-portable/flink-portable; range 0.64-1.25; target >= 0.8: met)')
  assert checks[('xinfer-flink/microservice', 'identity')]['met'] == 'not met'
  # A ratio to a floor counts only on the floor's runner.
  assert checks[('xinfer-spark/java-floor-spark',
                 'identity')]['met'] == 'runners differ'
  assert checks[('xinfer-spark/microservice', 'identity')]['met'] == 'not met'
  # No xinfer-direct and no java-floor-direct line: no check at all.
  assert ('xinfer-direct/java-floor-direct', 'identity') not in checks
  mlp = checks[('xinfer-flink/plain-python', 'wide-mlp')]
  assert mlp['value'] == pytest.approx(0.98) and mlp['met'] == 'met'
  # xinfer-spark ran on identity only: its wide-mlp ratio has no figure.
  missing = checks[('xinfer-spark/plain-python', 'wide-mlp')]
  assert missing['value'] is None and missing['met'] == 'no figure'
  assert measure.check_line(missing) == (
      'ratio xinfer-spark/plain-python wide-mlp n/a (batch 256; no '
      'xinfer-spark line; target >= 0.97: no figure)')


def _runs(*runs):
  return [
      dict(
          zip(('offered_per_second', 'max_bundle_ms', 'p99_ms', 'sustained'),
              (str(r) for r in run))) for run in runs
  ]


def test_streaming_checks_p99_targets_and_the_highest_rate_sustained():
  b = measure.STREAMING_BUNDLE_MS  # xinfer's default bundles: the runs checked
  checks = measure.streaming_checks(
      _runs((1000, 1000, 3000.0, 'no'), (1000, b, 45.0, 'yes'),
            (5000, b, 80.0, 'yes'), (20000, b, 240.0, 'yes'),
            (40000, b, 5000.0, 'no')))
  lines = [measure.check_line(c) for c in checks]
  assert lines == [
      f'streaming p99_ms@1000 45 (bundles {b} ms; kept up; target <= 50: met)',
      f'streaming p99_ms@20000 240 (bundles {b} ms; kept up; target < 250: met)',
      f'streaming max_sustained_per_s 20000 (bundles {b} ms; p99 < 1000 ms; '
      'every record back; not sustained: 40000)',
  ]
  # The 20,000/s run fell behind: its p99 is under the target, not met.
  checks = measure.streaming_checks(
      _runs((1000, b, 50.0, 'yes'), (20000, b, 200.0, 'no')))
  assert [c['met'] for c in checks] == ['met', 'not met', '']
  assert checks[2]['value'] == 1000.0
  # Nothing at the default bundles: no figures.
  checks = measure.streaming_checks(_runs((1000, 1000, 3000.0, 'yes')))
  assert [c['met'] for c in checks] == ['no figure'] * 3


def test_write_checks_appends_a_second_section_that_report_reads(tmp_path):
  csv = _results(tmp_path, [
      ('java-floor-flink', 'flink-portable', 'identity', 100000, 90000, 110000),
      ('xinfer-flink', 'flink-portable', 'identity', 83000, 80000, 90000),
  ])
  latency = tmp_path / 'latency.csv'
  latency.write_text(
      ','.join(measure.LATENCY_COLUMNS) + '\n' +
      '1000,100,10,15000,30.0,40.0,45.0,60.0,900.0,1000,0,yes\n' +
      '20000,100,10,300000,90.0,150.0,300.0,900.0,1200.0,19990,0,yes\n')
  lines = measure.write_checks(csv, str(latency))
  assert lines[0].startswith(
      'ratio xinfer-flink/java-floor-flink identity 0.83 ')
  assert ('streaming p99_ms@20000 300 (bundles 100 ms; kept up; target < 250: '
          'not met)') in lines
  assert ('streaming max_sustained_per_s 20000 (bundles 100 ms; p99 < 1000 ms; '
          'every record back)') in lines
  # Again: the section is replaced, not added to.
  assert measure.write_checks(csv, str(latency)) == lines
  text = open(csv).read()
  assert text.count('\n\n') == 1
  assert ('ratio,xinfer-flink/java-floor-flink,identity,256,0.83,0.7273,1,'
          '>= 0.8,met,flink-portable/flink-portable\n') in text
  assert 'streaming,max_sustained_per_s,,,20000,,,,,' in text
  assert [r['approach'] for r in measure.read_results(csv)
          ] == ['java-floor-flink', 'xinfer-flink']
  assert len(measure.read_checks(csv)) == len(lines)
  table = measure.report(csv, str(latency))
  assert ('| ratio xinfer-flink/java-floor-flink | identity | 256 | 0.83 | '
          '0.7273-1 | >= 0.8 | met | flink-portable/flink-portable |') in table
  assert measure.plot_throughput(csv, str(tmp_path))


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


def test_beam_throughput_is_the_median_of_three_marginal_measurements():
  from xinfer_bench import beam_pipeline
  runs = []
  # Start-up seconds per run: warm-up, then the three pairs (N/5, N).
  startups = iter([9.0, 3.0, 3.0, 4.0, 3.0, 5.0, 2.0])

  def run(rows):
    runs.append(rows)
    return next(startups) + rows / 1000  # start-up, then 1000 rows/s

  result = beam_pipeline.timed(run, 20000)
  assert runs == [1000] + [4000, 20000] * 3
  # Pairs: 16,000 rows in 16, 15 and 13 s; the median is the second.
  assert result == {
      'seconds_small': 8.0,
      'seconds_large': 23.0,
      'rows_per_second': pytest.approx(16000 / 15),
      'rows_per_second_min': pytest.approx(1000),
      'rows_per_second_max': pytest.approx(16000 / 13),
  }
  line = measure.csv_line(
      dict(result,
           approach='beam-python-flink',
           runner=beam_pipeline.RUNNER,
           model='identity.onnx',
           batch_size=256,
           rows=20000,
           jvm_peak_rss_mb=812.4,
           python_peak_rss_mb=301.6))
  assert line == ('beam-python-flink,flink-portable,identity.onnx,256,20000,'
                  '8.000,23.000,1066.7,1000.0,1230.8,812,302')
  assert len(line.split(',')) == len(measure.CSV_COLUMNS)
  with pytest.raises(RuntimeError, match='use more rows'):
    beam_pipeline.timed(lambda rows: 5.0 - rows / 1e6, 20000)
