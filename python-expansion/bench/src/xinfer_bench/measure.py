"""Benchmark models, the plain-Python baseline, and the results (``./xinfer bench``).

``python -m xinfer_bench prepare --out DIR`` writes, idempotently, two ONNX
models over rows of 64 float32 features, so that every approach the benchmark
compares runs the very same model file with the same runtime (ONNX Runtime):

- ``identity.onnx``: returns its input (64 floats per row): what crossing the
  boundary costs, with no model work;
- ``wide-mlp.onnx``: 64 -> 2048 -> 2048 -> 10 with ReLUs and a softmax (about
  4.3 M multiply-adds per row): a model whose compute dominates.

``python -m xinfer_bench plain --model FILE --rows N --batch-size B`` runs the
model's own predict loop in plain Python (approach 1, the limit the others are
compared with) and prints one JSON line (``--csv``: a line of the results CSV).
``python -m xinfer_bench serve --model FILE --port P`` serves the model over
HTTP on 127.0.0.1 (approach 4, the microservice: ``xinfer_bench.model_server``).
``python -m xinfer_bench beam ... --job-endpoint HOST:PORT`` runs approach 2,
Beam's own RunInference in a Python pipeline (``xinfer_bench.beam_pipeline``).
``python -m xinfer_bench report results.csv`` prints the Markdown table.
"""

import json
import os
import time
from typing import Optional

import numpy as np

FEATURES = 64
HIDDEN = 2048
CLASSES = 10
SEED = 20261124
MODELS = ('identity.onnx', 'wide-mlp.onnx')
# ONNX Runtime for Java 1.23 reads IR version 11 at most; 10 suits opset 17.
IR_VERSION = 10


def identity_model():
  from onnx import TensorProto, helper
  x = helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', FEATURES])
  y = helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', FEATURES])
  graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])],
                            'identity', [x], [y])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


def wide_mlp_model():
  from onnx import TensorProto, helper, numpy_helper
  rng = np.random.default_rng(SEED)

  def weights(name, rows, cols):
    w = rng.normal(0, (2.0 / rows)**0.5, size=(rows, cols)).astype(np.float32)
    return numpy_helper.from_array(w, name)

  def bias(name, n):
    return numpy_helper.from_array(np.zeros(n, np.float32), name)

  inits = [
      weights('w1', FEATURES, HIDDEN),
      bias('b1', HIDDEN),
      weights('w2', HIDDEN, HIDDEN),
      bias('b2', HIDDEN),
      weights('w3', HIDDEN, CLASSES),
      bias('b3', CLASSES),
  ]
  nodes = [
      helper.make_node('Gemm', ['x', 'w1', 'b1'], ['h1']),
      helper.make_node('Relu', ['h1'], ['a1']),
      helper.make_node('Gemm', ['a1', 'w2', 'b2'], ['h2']),
      helper.make_node('Relu', ['h2'], ['a2']),
      helper.make_node('Gemm', ['a2', 'w3', 'b3'], ['logits']),
      helper.make_node('Softmax', ['logits'], ['y'], axis=1),
  ]
  x = helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n', FEATURES])
  y = helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', CLASSES])
  graph = helper.make_graph(nodes, 'wide_mlp', [x], [y], initializer=inits)
  return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


def prepare(out_dir: str) -> list:
  """Writes the benchmark models unless they are there."""
  import onnx
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for name, build in (('identity.onnx', identity_model), ('wide-mlp.onnx',
                                                          wide_mlp_model)):
    path = os.path.join(out_dir, name)
    if os.path.exists(path) and onnx.load(path).ir_version == IR_VERSION:
      continue
    model = build()
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, path + '.tmp')
    os.replace(path + '.tmp', path)
    written.append(name)
  return written


def rows(n: int) -> np.ndarray:
  """The benchmark input: n rows of 64 features, value (31 i + 7 j) mod 17 for
  row i, feature j (pixel-like, 0-16); the Java side makes the very same rows."""
  i = np.arange(n, dtype=np.int64)[:, None]
  j = np.arange(FEATURES, dtype=np.int64)[None, :]
  return ((31 * i + 7 * j) % 17).astype(np.float32)


def session(model_path: str, threads: int = 1):
  import onnxruntime
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = threads
  return onnxruntime.InferenceSession(model_path,
                                      sess_options=options,
                                      providers=['CPUExecutionProvider'])


def plain(model_path: str, n: int, batch_size: int, threads: int = 1) -> dict:
  """Approach 1: the model's own predict loop, batches of ``batch_size``."""
  data = rows(n)
  sess = session(model_path, threads)
  name = sess.get_inputs()[0].name
  sess.run(None, {name: data[:batch_size]})  # warm-up
  start = time.perf_counter()
  for i in range(0, n, batch_size):
    sess.run(None, {name: data[i:i + batch_size]})
  seconds = time.perf_counter() - start
  return {
      'approach': 'plain-python',
      'model': os.path.basename(model_path),
      'rows': n,
      'batch_size': batch_size,
      'seconds': seconds,
      'rows_per_second': n / seconds,
  }


CSV_COLUMNS = ('approach', 'model', 'batch_size', 'rows', 'seconds_small',
               'seconds_large', 'rows_per_second', 'jvm_peak_rss_mb',
               'python_peak_rss_mb')


def peak_rss_mb() -> float:
  """This process's peak resident memory, MB."""
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_peak_rss_mb(pid: int) -> float:
  """Another process's peak resident memory (Linux ``VmHWM``), MB."""
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024.0
  raise ValueError(f'no VmHWM in /proc/{pid}/status')


def plain_csv_line(result: dict) -> str:
  """A plain-Python result as a line of the benchmark CSV (no small run, no
  JVM)."""
  return (f"{result['approach']},{result['model']},{result['batch_size']},"
          f"{result['rows']},,{result['seconds']:.3f},"
          f"{result['rows_per_second']:.1f},,{peak_rss_mb():.0f}")


def read_results(csv_path: str) -> list:
  import csv
  with open(csv_path) as f:
    return list(csv.DictReader(f))


def _mb(value) -> str:
  return f'{float(value):,.0f}' if value else ''


LATENCY_COLUMNS = ('offered_per_second', 'max_bundle_ms', 'warmup_s', 'records',
                   'p50_ms', 'p90_ms', 'p99_ms', 'max_ms', 'warmup_p99_ms')


def percentile(sorted_values, q: float) -> float:
  """Nearest-rank percentile (as the Java launcher computes it)."""
  import math
  return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def latency_line(latency_csv: str, rate: int, bundle_ms: int,
                 warmup_s: int) -> str:
  """One streaming run's latency file (id, latency_ms, phase) as a line of
  the latency CSV: percentiles over the steady records (sent once the job was
  up and warmed up), then the p99 of the warm-up records on their own."""
  import csv
  with open(latency_csv) as f:
    rows = list(csv.DictReader(f))
  values = sorted(
      float(r['latency_ms']) for r in rows if r['phase'] == 'steady')
  warmup = sorted(
      float(r['latency_ms']) for r in rows if r['phase'] == 'warmup')
  if not values:
    raise ValueError(f'{latency_csv}: no steady-state record came back')
  warmup_p99 = f'{percentile(warmup, 0.99):.1f}' if warmup else ''
  return (f'{rate},{bundle_ms},{warmup_s},{len(values)},' +
          ','.join(f'{percentile(values, q):.1f}' for q in (0.5, 0.9, 0.99)) +
          f',{values[-1]:.1f},{warmup_p99}')


def report(csv_path: str, latency_csv: Optional[str] = None) -> str:
  """The results as Markdown tables: throughput and its ratio to plain Python
  (approach 1) for the same model and batch size, and peak memory; then the
  streaming latency per offered rate."""
  results = read_results(csv_path)
  limit = {
      (r['model'], r['batch_size']): float(r['rows_per_second'])
      for r in results if r['approach'] == 'plain-python'
  }
  lines = [
      '| model | batch size | approach | rows/s | ratio to plain Python '
      '| JVM peak RSS (MB) | Python peak RSS (MB) |',
      '|---|---:|---|---:|---:|---:|---:|',
  ]
  for r in sorted(
      results,
      key=lambda r:
      (r['model'], int(r['batch_size']), -float(r['rows_per_second']))):
    base = limit.get((r['model'], r['batch_size']))
    ratio = f"{float(r['rows_per_second']) / base:.4f}" if base else 'n/a'
    lines.append(f"| {r['model']} | {r['batch_size']} | {r['approach']} | "
                 f"{float(r['rows_per_second']):,.0f} | {ratio} | "
                 f"{_mb(r.get('jvm_peak_rss_mb'))} | "
                 f"{_mb(r.get('python_peak_rss_mb'))} |")
  if latency_csv and os.path.exists(latency_csv):
    lines += [
        '',
        '| offered records/s | max bundle (ms) | warm-up (s) | records | '
        'p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | p99 during warm-up (ms) |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in read_results(latency_csv):
      lines.append('| ' + ' | '.join(r[c] for c in LATENCY_COLUMNS) + ' |')
  return '\n'.join(lines) + '\n'


def plot_throughput(csv_path: str, out_dir: str) -> list:
  """One PNG per model: rows/s per approach (log scale), a bar per batch size."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  results = read_results(csv_path)
  written = []
  for model in sorted({r['model'] for r in results}):
    rows = [r for r in results if r['model'] == model]
    batches = sorted({int(r['batch_size']) for r in rows})
    approaches = sorted({r['approach']
                         for r in rows},
                        key=lambda a: -max(
                            float(r['rows_per_second']) for r in rows
                            if r['approach'] == a))
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(batches)
    for k, batch in enumerate(batches):
      values = []
      for a in approaches:
        match = [
            float(r['rows_per_second']) for r in rows
            if r['approach'] == a and int(r['batch_size']) == batch
        ]
        values.append(match[0] if match else 0)
      ax.bar([i + k * width for i in range(len(approaches))],
             values,
             width,
             label=f'batch {batch}')
    ax.set_xticks(
        [i + width * (len(batches) - 1) / 2 for i in range(len(approaches))])
    ax.set_xticklabels(approaches, rotation=25, ha='right')
    ax.set_yscale('log')
    ax.set_ylabel('rows/s (log scale)')
    ax.set_title(f'{model}: throughput per approach')
    ax.legend()
    ax.grid(axis='y', which='both', alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, f"throughput-{model.replace('.onnx', '')}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def plot_latency(latency_csv: str, out_dir: str) -> str:
  """p50/p90/p99 end-to-end latency per offered rate, a line per bundle time."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  runs = read_results(latency_csv)
  fig, ax = plt.subplots(figsize=(8, 5))
  for bundle in sorted({int(r['max_bundle_ms']) for r in runs}):
    mine = sorted((r for r in runs if int(r['max_bundle_ms']) == bundle),
                  key=lambda r: int(r['offered_per_second']))
    rates = [int(r['offered_per_second']) for r in mine]
    for column, style in (('p50_ms', 'o-'), ('p90_ms', 's--'), ('p99_ms',
                                                                '^:')):
      ax.plot(rates, [float(r[column]) for r in mine],
              style,
              label=f"{column[:-3]}, bundles <= {bundle} ms")
  ax.set_xlabel('offered records/s')
  ax.set_ylabel('end-to-end latency (ms, log scale)')
  ax.set_yscale('log')
  ax.set_title('Kafka -> xinfer on embedded Flink -> Kafka (after warm-up)')
  ax.grid(which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(out_dir, 'latency.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
