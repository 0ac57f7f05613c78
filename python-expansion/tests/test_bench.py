import os

import numpy as np
import pytest

from xinfer import bench


@pytest.fixture(scope='module')
def bench_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('bench'))
  assert sorted(bench.prepare(out)) == sorted(bench.MODELS)
  assert bench.prepare(out) == []  # idempotent
  return out


def test_rows_follow_the_formula_java_uses():
  data = bench.rows(3)
  assert data.shape == (3, 64) and data.dtype == np.float32
  assert data[2, 5] == (31 * 2 + 7 * 5) % 17


def test_identity_model_returns_its_input(bench_dir):
  session = bench.session(os.path.join(bench_dir, 'identity.onnx'))
  data = bench.rows(5)
  np.testing.assert_array_equal(session.run(None, {'x': data})[0], data)


def test_wide_mlp_gives_probabilities(bench_dir):
  session = bench.session(os.path.join(bench_dir, 'wide-mlp.onnx'))
  out = session.run(None, {'x': bench.rows(4)})[0]
  assert out.shape == (4, 10)
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_plain_loop_reports_its_throughput(bench_dir):
  result = bench.plain(os.path.join(bench_dir, 'identity.onnx'), 1000, 100)
  assert result['approach'] == 'plain-python'
  assert result['rows'] == 1000 and result['batch_size'] == 100
  assert result['rows_per_second'] == pytest.approx(1000 / result['seconds'])


def test_report_gives_ratios_to_plain_python_and_memory(tmp_path):
  csv = tmp_path / 'results.csv'
  csv.write_text(','.join(bench.CSV_COLUMNS) + '\n' +
                 'plain-python,m.onnx,256,1000,,0.001,1000000.0,,150\n' +
                 'xinfer-flink,m.onnx,256,1000,1.0,2.0,250000.0,1200,900\n')
  table = bench.report(str(csv))
  assert '| m.onnx | 256 | xinfer-flink | 250,000 | 0.2500 | 1,200 | 900 |' in table
  assert '| m.onnx | 256 | plain-python | 1,000,000 | 1.0000 |  | 150 |' in table


def test_plain_csv_line_has_every_column(bench_dir):
  result = bench.plain(os.path.join(bench_dir, 'identity.onnx'), 100, 10)
  fields = bench.plain_csv_line(result).split(',')
  assert len(fields) == len(bench.CSV_COLUMNS)
  assert float(fields[bench.CSV_COLUMNS.index('python_peak_rss_mb')]) > 0


def test_plot_draws_a_png_per_model(tmp_path):
  csv = tmp_path / 'results.csv'
  csv.write_text(','.join(bench.CSV_COLUMNS) + '\n' +
                 'plain-python,a.onnx,64,1000,,0.001,1000000.0,,150\n' +
                 'xinfer-flink,a.onnx,64,1000,1.0,2.0,250000.0,1200,900\n' +
                 'xinfer-flink,b.onnx,256,1000,1.0,2.0,2500.0,1200,900\n')
  paths = bench.plot_throughput(str(csv), str(tmp_path))
  assert sorted(os.path.basename(p)
                for p in paths) == ['throughput-a.png', 'throughput-b.png']
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
