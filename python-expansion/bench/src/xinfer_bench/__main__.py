"""``python -m xinfer_bench
prepare|plain|serve|beam|latency|checks|report|plot``: the benchmark's Python
pieces, as ``./xinfer bench`` (pipelines/bench.sh) runs them."""

import argparse
import json
import os
import sys

from xinfer_bench import model_server
from xinfer_bench import measure


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m xinfer_bench')
  sub = parser.add_subparsers(dest='command', required=True)
  prep = sub.add_parser('prepare', help='write the benchmark models')
  prep.add_argument('--out', required=True)
  run = sub.add_parser('plain', help='approach 1: plain Python predict loop')
  run.add_argument('--model', required=True)
  run.add_argument('--rows', type=int, required=True)
  run.add_argument('--batch-size', type=int, required=True)
  run.add_argument('--threads', type=int, default=1)
  run.add_argument(
      '--repetitions',
      type=int,
      default=measure.REPETITIONS,
      help='timed loops after the warm-up (the median is reported)')
  run.add_argument('--csv',
                   action='store_true',
                   help='print a line of the benchmark CSV, not JSON')
  srv = sub.add_parser(
      'serve', help='approach 4: serve the model over HTTP on 127.0.0.1')
  srv.add_argument('--model', required=True)
  srv.add_argument('--port',
                   type=int,
                   default=0,
                   help='port (0: a free port, printed in the ready line)')
  srv.add_argument('--threads',
                   type=int,
                   default=1,
                   help='ONNX Runtime intra-op threads per request')
  srv.add_argument('--parent-pid',
                   type=int,
                   default=None,
                   help='stop when this process ends (default: when the '
                   'process that started the server ends)')
  beam = sub.add_parser(
      'beam', help='approach 2: Beam Python RunInference on a job server')
  beam.add_argument('--model', required=True)
  beam.add_argument('--rows', type=int, required=True)
  beam.add_argument('--batch-size', type=int, required=True)
  beam.add_argument('--job-endpoint',
                    required=True,
                    help='HOST:PORT of a Beam job server (Flink)')
  beam.add_argument('--threads', type=int, default=1)
  beam.add_argument('--job-server-pid',
                    type=int,
                    default=None,
                    help="the job server's pid, to report its peak memory")
  beam.add_argument('--csv',
                    action='store_true',
                    help='print a line of the benchmark CSV, not JSON')
  rep = sub.add_parser('report', help='results CSV to a Markdown table')
  rep.add_argument('csv')
  rep.add_argument('latency_csv', nargs='?')
  plot = sub.add_parser('plot', help='results CSV to PNG plots beside it')
  plot.add_argument('csv')
  plot.add_argument('latency_csv', nargs='?')
  lat = sub.add_parser('latency',
                       help="a streaming run's latency file to a CSV line")
  lat.add_argument('--rate', type=int, required=True)
  lat.add_argument('--bundle-ms', type=int, required=True)
  lat.add_argument('--warmup-s', type=int, required=True)
  lat.add_argument('--records',
                   type=int,
                   required=True,
                   help='examples the run sent (to count the missing)')
  lat.add_argument('file')
  chk = sub.add_parser(
      'checks',
      help='print the ratios and streaming figures the targets are about, '
      'and write them to the results CSV as its second section')
  chk.add_argument('csv')
  chk.add_argument('latency_csv', nargs='?')
  args = parser.parse_args(argv)
  if args.command == 'prepare':
    written = measure.prepare(args.out)
    print(f"bench models in {args.out}: {', '.join(measure.MODELS)}"
          f"{' (written now: ' + ', '.join(written) + ')' if written else ''}")
  elif args.command == 'report':
    print(measure.report(args.csv, args.latency_csv), end='')
  elif args.command == 'plot':
    out_dir = os.path.dirname(args.csv) or '.'
    for path in measure.plot_throughput(args.csv, out_dir):
      print(f'plot: {path}')
    if args.latency_csv and os.path.exists(args.latency_csv):
      print(f'plot: {measure.plot_latency(args.latency_csv, out_dir)}')
  elif args.command == 'latency':
    print(
        measure.latency_line(args.file, args.rate, args.bundle_ms,
                             args.warmup_s, args.records))
  elif args.command == 'serve':
    return model_server.serve(args.model, args.port, args.threads,
                              args.parent_pid)
  elif args.command == 'beam':
    from xinfer_bench import beam_pipeline  # imports Beam: only for this one
    result = beam_pipeline.benchmark(args.model, args.rows, args.batch_size,
                                     args.job_endpoint, args.threads)
    # The SDK worker runs in this process; the job server is the JVM.
    result['python_peak_rss_mb'] = measure.peak_rss_mb()
    if args.job_server_pid:
      result['jvm_peak_rss_mb'] = measure.process_peak_rss_mb(
          args.job_server_pid)
    print(measure.csv_line(result) if args.csv else json.dumps(result))
  elif args.command == 'checks':
    for line in measure.write_checks(args.csv, args.latency_csv):
      print(line)
  else:
    result = measure.plain(args.model, args.rows, args.batch_size, args.threads,
                           args.repetitions)
    result['python_peak_rss_mb'] = measure.peak_rss_mb()
    print(measure.csv_line(result) if args.csv else json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
