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
``python -m xinfer_bench checks results.csv latency.csv`` prints the figures
the project's targets are about (ratios between approaches, streaming latency
and the highest rate sustained), one line each, and writes them to
``results.csv`` as a second section. ``python -m xinfer_bench report
results.csv latency.csv`` prints the Markdown tables.

Every throughput figure is the median of ``REPETITIONS`` measurements, with
their minimum and maximum, and names the runner it was measured on.
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


# A result line's ``runner``: which Beam runner ran the pipeline (``Bench``
# reads it from the built pipeline's options); plain Python runs on none.
NO_RUNNER = 'none'

REPETITIONS = 3


def median_of(measurements: list) -> dict:
  """The median of measurements (dicts with ``rows_per_second``), with
  ``rows_per_second_min`` and ``rows_per_second_max`` over all of them."""
  if not measurements:
    raise ValueError('no measurement to take the median of')
  ranked = sorted(measurements, key=lambda m: m['rows_per_second'])
  return dict(ranked[len(ranked) // 2],
              rows_per_second_min=ranked[0]['rows_per_second'],
              rows_per_second_max=ranked[-1]['rows_per_second'])


def plain(model_path: str,
          n: int,
          batch_size: int,
          threads: int = 1,
          repetitions: int = REPETITIONS) -> dict:
  """Approach 1: the model's own predict loop, batches of ``batch_size``;
  after a warm-up, ``repetitions`` times over the ``n`` rows."""
  data = rows(n)
  sess = session(model_path, threads)
  name = sess.get_inputs()[0].name
  sess.run(None, {name: data[:batch_size]})  # warm-up
  measurements = []
  for _ in range(repetitions):
    start = time.perf_counter()
    for i in range(0, n, batch_size):
      sess.run(None, {name: data[i:i + batch_size]})
    seconds = time.perf_counter() - start
    measurements.append({
        'seconds_large': seconds,
        'rows_per_second': n / seconds
    })
  return dict(median_of(measurements),
              approach='plain-python',
              runner=NO_RUNNER,
              model=os.path.basename(model_path),
              rows=n,
              batch_size=batch_size)


CSV_COLUMNS = ('approach', 'runner', 'model', 'batch_size', 'rows',
               'seconds_small', 'seconds_large', 'rows_per_second',
               'rows_per_second_min', 'rows_per_second_max', 'jvm_peak_rss_mb',
               'python_peak_rss_mb')
_CSV_FORMATS = {
    'seconds_small': '.3f',
    'seconds_large': '.3f',
    'rows_per_second': '.1f',
    'rows_per_second_min': '.1f',
    'rows_per_second_max': '.1f',
    'jvm_peak_rss_mb': '.0f',
    'python_peak_rss_mb': '.0f',
}


def csv_line(result: dict) -> str:
  """A result as a line of the benchmark CSV (``CSV_COLUMNS``); a column the
  result lacks (no small run, no JVM) is left empty."""
  fields = []
  for column in CSV_COLUMNS:
    value = result.get(column)
    fields.append('' if value is
                  None else format(value, _CSV_FORMATS.get(column, '')))
  return ','.join(fields)


def peak_rss_mb() -> float:
  """This process's peak resident memory, MB: Linux's ``VmHWM``, which starts
  anew with the program; ``ru_maxrss`` (elsewhere) keeps across ``exec`` the
  peak of the process that started it (a JVM's, when Bench runs plain Python)."""
  if os.path.exists('/proc/self/status'):
    return process_peak_rss_mb(os.getpid())
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_peak_rss_mb(pid: int) -> float:
  """Another process's peak resident memory (Linux ``VmHWM``), MB."""
  with open(f'/proc/{pid}/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024.0
  raise ValueError(f'no VmHWM in /proc/{pid}/status')


def read_results(csv_path: str) -> list:
  """The throughput lines of a results CSV: its first section."""
  return _sections(csv_path)[0]


def read_checks(csv_path: str) -> list:
  """The checks ``write_checks`` appended to a results CSV, if any."""
  sections = _sections(csv_path)
  return sections[1] if len(sections) > 1 else []


def _sections(csv_path: str) -> list:
  """A CSV file's sections (each a header and its rows, separated by a blank
  line), each as a list of dicts."""
  import csv
  with open(csv_path) as f:
    blocks = [[]]
    for line in f:
      if line.strip():
        blocks[-1].append(line)
      elif blocks[-1]:
        blocks.append([])
  return [list(csv.DictReader(block)) for block in blocks if block]


def _mb(value) -> str:
  return f'{float(value):,.0f}' if value else ''


LATENCY_COLUMNS = ('offered_per_second', 'max_bundle_ms', 'warmup_s', 'records',
                   'p50_ms', 'p90_ms', 'p99_ms', 'max_ms', 'warmup_p99_ms',
                   'sent_per_second', 'missing', 'sustained', 'read_p50_ms',
                   'read_p99_ms', 'after_read_p50_ms', 'after_read_p99_ms')

# A streaming run sustains its offered rate when the examples went out at the
# rate (within 5 %), every one came back, and the p99 stayed under a second.
SUSTAINED_P99_MS = 1000.0
SUSTAINED_SEND_SHARE = 0.95


def percentile(sorted_values, q: float) -> float:
  """Nearest-rank percentile (as the Java launcher computes it)."""
  import math
  return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def latency_line(latency_csv: str, rate: int, bundle_ms: int, warmup_s: int,
                 records: int) -> str:
  """One streaming run's latency file (id, latency_ms, phase, sent_ms, read_ms:
  one line per example that came back) as a line of the latency CSV:
  percentiles over the steady records (sent once the job was up and warmed up),
  the p99 of the warm-up records on their own, the rate the steady records were
  sent at, how many of the ``records`` sent never came back, whether the run
  sustained ``rate`` (``yes``/``no``), and where the steady records' time went:
  p50 and p99 of ``read_ms`` (from the send to the pipeline's source reading
  the example) and of the rest (from that read to the prediction back), empty
  where the file has no read times (written exactly once)."""
  import csv
  with open(latency_csv) as f:
    rows = list(csv.DictReader(f))
  steady = [r for r in rows if r['phase'] == 'steady']
  values = sorted(float(r['latency_ms']) for r in steady)
  warmup = sorted(
      float(r['latency_ms']) for r in rows if r['phase'] == 'warmup')
  if not values:
    raise ValueError(f'{latency_csv}: no steady-state record came back')
  warmup_p99 = f'{percentile(warmup, 0.99):.1f}' if warmup else ''
  sent = sorted(float(r['sent_ms']) for r in steady)
  span_s = (sent[-1] - sent[0]) / 1000 if len(sent) > 1 else 0
  sent_per_second = (len(sent) - 1) / span_s if span_s > 0 else 0
  missing = records - len(rows)
  p99 = percentile(values, 0.99)
  sustained = (missing <= 0 and p99 < SUSTAINED_P99_MS
               and sent_per_second >= SUSTAINED_SEND_SHARE * rate)
  split = ',,,'
  if all(r.get('read_ms') for r in steady):
    read = sorted(float(r['read_ms']) for r in steady)
    after = sorted(float(r['latency_ms']) - float(r['read_ms']) for r in steady)
    split = ','.join(f'{percentile(v, q):.1f}' for v in (read, after)
                     for q in (0.5, 0.99))
  return (f'{rate},{bundle_ms},{warmup_s},{len(values)},' +
          ','.join(f'{percentile(values, q):.1f}' for q in (0.5, 0.9, 0.99)) +
          f',{values[-1]:.1f},{warmup_p99},{sent_per_second:.0f},'
          f"{max(missing, 0)},{'yes' if sustained else 'no'},{split}")


# The figures the project's targets are about (issue 16, items 1-3).
# Throughput ratios, median over median on the same model and batch size:
# (model, approach, divided by, target: at least).
RATIO_CHECKS = (
    ('identity', 'xinfer-flink', 'java-floor-flink', 0.8),
    ('identity', 'xinfer-flink', 'microservice', 2.0),
    ('identity', 'xinfer-spark', 'java-floor-spark', 0.8),
    ('identity', 'xinfer-spark', 'microservice', 2.0),
    ('identity', 'xinfer-direct', 'java-floor-direct', None),
    ('wide-mlp', 'xinfer-flink', 'plain-python', 0.97),
    ('wide-mlp', 'xinfer-spark', 'plain-python', 0.97),
)
# Streaming, xinfer's default bundles: (offered rate, p99 target in ms, whether
# the target is "below" (<) rather than "at most" (<=)); the run must also have
# sustained the rate. The default is Java's FlinkEngine.STREAMING_BUNDLE_MILLIS.
STREAMING_BUNDLE_MS = 100
STREAMING_P99_CHECKS = ((1000, 50.0, False), (20000, 250.0, True))
CHECK_COLUMNS = ('check', 'name', 'model', 'batch_size', 'value', 'low', 'high',
                 'target', 'met', 'note')


def _model_name(model: str) -> str:
  return model[:-len('.onnx')] if model.endswith('.onnx') else model


def ratio_checks(results: list) -> list:
  """``RATIO_CHECKS`` over the throughput lines, one per batch size: each a
  dict of ``CHECK_COLUMNS``. ``value`` is the ratio of the medians; ``low``
  and ``high`` bound it with the min and max of the two (min over max, max
  over min). A ratio to a floor counts only on the same runner."""
  by_key = {
      (_model_name(r['model']), r['approach'], r['batch_size']): r
      for r in results
  }
  batches = sorted({r['batch_size'] for r in results}, key=int)
  checks = []
  for model, approach, base, target in RATIO_CHECKS:
    for batch in batches:
      a = by_key.get((model, approach, batch))
      b = by_key.get((model, base, batch))
      if a is None and b is None:
        continue
      check = {
          'check': 'ratio',
          'name': f'{approach}/{base}',
          'model': model,
          'batch_size': batch,
          'value': None,
          'low': None,
          'high': None,
          'target': '' if target is None else f'>= {target:g}',
          'met': '',
          'note': '',
      }
      if a is None or b is None:
        check['met'] = 'no figure'
        check['note'] = f'no {approach if a is None else base} line'
      else:
        check['note'] = f"{a.get('runner') or '?'}/{b.get('runner') or '?'}"
        value = float(a['rows_per_second']) / float(b['rows_per_second'])
        check['value'] = value
        check['low'] = _float(a, 'rows_per_second_min') / _float(
            b, 'rows_per_second_max')
        check['high'] = _float(a, 'rows_per_second_max') / _float(
            b, 'rows_per_second_min')
        if base.startswith('java-floor') and a.get('runner') != b.get('runner'):
          check['met'] = 'runners differ'
        elif target is not None:
          check['met'] = 'met' if value >= target else 'not met'
      checks.append(check)
  return checks


def _float(row: dict, column: str) -> float:
  """A min/max column, or the median where a line has none (older CSVs)."""
  return float(row.get(column) or row['rows_per_second'])


def streaming_checks(runs: list) -> list:
  """``STREAMING_P99_CHECKS`` and the highest rate sustained over the
  latency lines at ``STREAMING_BUNDLE_MS``: each a dict of
  ``CHECK_COLUMNS``. A rate measured twice counts by its last run."""
  last = {}
  for r in runs:
    if int(r['max_bundle_ms']) == STREAMING_BUNDLE_MS:
      last[int(r['offered_per_second'])] = r
  checks = []
  base = {
      'check': 'streaming',
      'model': '',
      'batch_size': '',
      'low': None,
      'high': None
  }
  for rate, target, strict in STREAMING_P99_CHECKS:
    check = dict(base,
                 name=f'p99_ms@{rate}',
                 value=None,
                 target=f"{'<' if strict else '<='} {target:g}",
                 met='no figure',
                 note=f'bundles {STREAMING_BUNDLE_MS} ms')
    run = last.get(rate)
    if run is not None:
      p99 = float(run['p99_ms'])
      kept_up = run.get('sustained') == 'yes'
      check['value'] = p99
      check['note'] += '; kept up' if kept_up else '; did not keep up'
      below = p99 < target if strict else p99 <= target
      check['met'] = 'met' if below and kept_up else 'not met'
    checks.append(check)
  sustained = sorted(r for r, run in last.items()
                     if run.get('sustained') == 'yes')
  failed = sorted(r for r, run in last.items() if run.get('sustained') != 'yes')
  note = (f'bundles {STREAMING_BUNDLE_MS} ms; p99 < '
          f'{SUSTAINED_P99_MS:g} ms; every record back')
  if failed:
    note += '; not sustained: ' + ' '.join(str(r) for r in failed)
  checks.append(
      dict(base,
           name='max_sustained_per_s',
           value=float(sustained[-1]) if sustained else None,
           target='',
           met='' if sustained else 'no figure',
           note=note))
  return checks


def _number(value) -> str:
  if value is None:
    return 'n/a'
  return f'{value:.0f}' if value >= 100 else f'{value:.4g}'


def _csv_value(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.0f}' if value >= 100 else f'{value:.4g}'
  return str(value)


def check_line(check: dict) -> str:
  """A check as a line of its own, e.g. ``ratio xinfer-flink/java-floor-flink
  identity 0.83 (batch 256; flink-portable/flink-portable; range 0.71-0.95;
  target >= 0.8: met)``."""
  words = [check['check'], check['name']]
  if check['model']:
    words.append(check['model'])
  words.append(_number(check['value']))
  details = []
  if check['batch_size']:
    details.append(f"batch {check['batch_size']}")
  if check['note']:
    details.append(check['note'])
  if check['low'] is not None:
    details.append(f"range {_number(check['low'])}-{_number(check['high'])}")
  if check['target']:
    details.append(f"target {check['target']}: {check['met']}")
  elif check['met']:
    details.append(check['met'])
  return ' '.join(words) + f" ({'; '.join(details)})"


def write_checks(csv_path: str, latency_csv: Optional[str] = None) -> list:
  """Computes the checks from a results CSV (and the latency CSV, if there
  is one), writes them to the results CSV as its second section (replacing
  one there) and returns their lines."""
  import csv
  import io
  results = read_results(csv_path)
  checks = ratio_checks(results)
  if latency_csv and os.path.exists(latency_csv):
    checks += streaming_checks(read_results(latency_csv))
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(CSV_COLUMNS)
  for r in results:
    writer.writerow([r.get(c) or '' for c in CSV_COLUMNS])
  writer.writerow([])
  writer.writerow(CHECK_COLUMNS)
  for check in checks:
    writer.writerow([_csv_value(check[c]) for c in CHECK_COLUMNS])
  with open(csv_path + '.tmp', 'w') as f:
    f.write(out.getvalue())
  os.replace(csv_path + '.tmp', csv_path)
  return [check_line(c) for c in checks]


def _rate(value) -> str:
  return f'{float(value):,.0f}' if value else ''


def report(csv_path: str, latency_csv: Optional[str] = None) -> str:
  """The results as Markdown tables: throughput (the median of the
  repetitions, their min-max) per runner and its ratio to plain Python
  (approach 1) for the same model and batch size, and peak memory; then the
  streaming latency per offered rate; then the checks, if written."""
  results = read_results(csv_path)
  limit = {
      (r['model'], r['batch_size']): float(r['rows_per_second'])
      for r in results if r['approach'] == 'plain-python'
  }
  lines = [
      f'| model | batch size | approach | runner | rows/s (median of '
      f'{REPETITIONS}) | min-max | ratio to plain Python '
      '| JVM peak RSS (MB) | Python peak RSS (MB) |',
      '|---|---:|---|---|---:|---:|---:|---:|---:|',
  ]
  for r in sorted(
      results,
      key=lambda r:
      (r['model'], int(r['batch_size']), -float(r['rows_per_second']))):
    base = limit.get((r['model'], r['batch_size']))
    ratio = f"{float(r['rows_per_second']) / base:.4f}" if base else 'n/a'
    spread = (f"{_rate(r.get('rows_per_second_min'))}-"
              f"{_rate(r.get('rows_per_second_max'))}"
              if r.get('rows_per_second_min') else '')
    lines.append(f"| {r['model']} | {r['batch_size']} | {r['approach']} | "
                 f"{r.get('runner') or ''} | {_rate(r['rows_per_second'])} | "
                 f"{spread} | {ratio} | "
                 f"{_mb(r.get('jvm_peak_rss_mb'))} | "
                 f"{_mb(r.get('python_peak_rss_mb'))} |")
  if latency_csv and os.path.exists(latency_csv):
    lines += [
        '',
        '| offered records/s | max bundle (ms) | warm-up (s) | records | '
        'p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | p99 during warm-up (ms) '
        '| sent/s | missing | sustained | to the read p50 (ms) '
        '| to the read p99 (ms) | after the read p50 (ms) '
        '| after the read p99 (ms) |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:'
        '|---:|---:|',
    ]
    for r in read_results(latency_csv):
      lines.append('| ' + ' | '.join(r.get(c) or ''
                                     for c in LATENCY_COLUMNS) + ' |')
  checks = read_checks(csv_path)
  if checks:
    lines += [
        '',
        '| check | model | batch size | value | range | target | met | note |',
        '|---|---|---:|---:|---:|---|---|---|',
    ]
    for c in checks:
      spread = f"{c['low']}-{c['high']}" if c.get('low') else ''
      lines.append(f"| {c['check']} {c['name']} | {c['model']} | "
                   f"{c['batch_size']} | {c['value'] or 'n/a'} | {spread} | "
                   f"{c['target']} | {c['met']} | {c['note']} |")
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
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(batches)
    for k, batch in enumerate(batches):
      values, below, above = [], [], []
      for a in approaches:
        match = [
            r for r in rows
            if r['approach'] == a and int(r['batch_size']) == batch
        ]
        median = low = high = 0.0
        if match:
          median = float(match[0]['rows_per_second'])
          low = _float(match[0], 'rows_per_second_min')
          high = _float(match[0], 'rows_per_second_max')
        values.append(median)
        below.append(median - low)
        above.append(high - median)
      ax.bar([i + k * width for i in range(len(approaches))],
             values,
             width,
             yerr=[below, above],
             capsize=3,
             label=f'batch {batch}')
    runners = {
        a: '/'.join(
            sorted({r.get('runner') or '?'
                    for r in rows if r['approach'] == a}))
        for a in approaches
    }
    ax.set_xticks(
        [i + width * (len(batches) - 1) / 2 for i in range(len(approaches))])
    ax.set_xticklabels([f'{a}\n({runners[a]})' for a in approaches],
                       rotation=30,
                       ha='right',
                       fontsize=8)
    ax.set_yscale('log')
    ax.set_ylabel(f'rows/s (log scale): median of {REPETITIONS}, min-max')
    ax.set_title(f'{model}: throughput per approach (runner)')
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
  ax.set_xscale('log')
  ax.set_xlabel('offered records/s (log scale)')
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
