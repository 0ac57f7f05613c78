"""The benchmark's model server (approach 4, the microservice).

``python -m xinfer_bench serve --model FILE [--port P] [--threads T]`` serves
one ONNX benchmark model over HTTP on 127.0.0.1, with the same ONNX Runtime
session settings as the plain-Python baseline (``measure.session``: one
intra-op thread per call). It is a real server process: the Java pipeline's
``Microservice`` transform sends it batches of rows, several at a time.

``POST /predict``: the body is little-endian float32 rows, row after row; the
header ``X-Rows`` (or the query ``?n=``) gives the number of rows. The reply
is the model's first output as little-endian float32 bytes (``X-Rows`` rows of
``X-Columns`` values). A malformed request gets a 400 with a plain-text
message. ``GET /health`` answers ``ok``.

Concurrent requests are served by a thread each (``ThreadingHTTPServer``,
HTTP/1.1 keep-alive); ONNX Runtime releases the GIL while it runs, so two
requests run the model on two cores at once. When the server listens, it
prints one line ``xinfer-bench-server ready {"port": P, "url": ...}``
(``--port 0``: a free port, the one printed). It stops on SIGTERM or SIGINT,
and by itself when its parent process is gone.
"""

import json
import os
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from xinfer import lifecycle
from xinfer_bench import measure

READY_PREFIX = 'xinfer-bench-server ready '
HOST = '127.0.0.1'
# A batch of 100,000 rows of 64 floats is 25 MB: anything above is a mistake.
MAX_BODY_BYTES = 256 * 1024 * 1024


class BadRequest(Exception):
  pass


class ModelServer(ThreadingHTTPServer):
  """A ThreadingHTTPServer holding one ONNX Runtime session."""
  daemon_threads = True
  # Many keep-alive connections may arrive at once from a parallel pipeline.
  request_queue_size = 64

  def __init__(self, model_path: str, port: int = 0, threads: int = 1):
    self.model_path = model_path
    self.session = measure.session(model_path, threads)
    model_input = self.session.get_inputs()[0]
    self.input_name = model_input.name
    width = model_input.shape[-1]
    self.width = width if isinstance(width, int) else measure.FEATURES
    super().__init__((HOST, port), PredictHandler)

  @property
  def port(self) -> int:
    return self.server_address[1]

  def predict(self, body: bytes, n: int) -> np.ndarray:
    if n <= 0:
      raise BadRequest(f'the number of rows must be positive, got {n}')
    expected = n * self.width * 4
    if len(body) != expected:
      raise BadRequest(
          f'the body has {len(body)} bytes; {n} rows of {self.width} float32 '
          f'values need {expected} (little-endian float32, row after row)')
    rows = np.frombuffer(body, dtype='<f4').reshape(n, self.width)
    out = self.session.run(None, {self.input_name: rows})[0]
    return np.ascontiguousarray(out, dtype='<f4').reshape(n, -1)


class PredictHandler(BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'  # keep-alive: one connection per client slot
  disable_nagle_algorithm = True  # no 40 ms stalls between header and body
  server_version = 'xinfer-bench-server'

  def do_GET(self):
    if urllib.parse.urlsplit(self.path).path == '/health':
      self._reply(200, b'ok\n', 'text/plain; charset=utf-8')
    else:
      self._error(404, f'no such path {self.path}; use POST /predict')

  def do_POST(self):
    url = urllib.parse.urlsplit(self.path)
    length = self.headers.get('Content-Length')
    if url.path != '/predict':
      self._discard(length)
      self._error(404, f'no such path {url.path}; use POST /predict')
      return
    try:
      body = self._body(length)
      n = self._rows(url)
      out = self.server.predict(body, n)
    except BadRequest as e:
      self._error(400, str(e))
      return
    except Exception as e:  # the model failed: the client sees why
      self._error(500, f'{type(e).__name__}: {e}')
      return
    self._reply(200, out.tobytes(), 'application/octet-stream', {
        'X-Rows': str(out.shape[0]),
        'X-Columns': str(out.shape[1])
    })

  def _body(self, length) -> bytes:
    if length is None:
      self.close_connection = True
      raise BadRequest('the request has no Content-Length header')
    try:
      size = int(length)
    except ValueError:
      self.close_connection = True
      raise BadRequest(f'Content-Length {length!r} is not a number')
    if size < 0 or size > MAX_BODY_BYTES:
      self.close_connection = True
      raise BadRequest(f'Content-Length {size} is out of range '
                       f'(0 to {MAX_BODY_BYTES})')
    return self.rfile.read(size)

  def _rows(self, url) -> int:
    value = self.headers.get('X-Rows')
    if value is None:
      values = urllib.parse.parse_qs(url.query).get('n')
      value = values[0] if values else None
    if value is None:
      raise BadRequest('the number of rows is missing: send the header '
                       'X-Rows: N or the query ?n=N')
    try:
      return int(value)
    except ValueError:
      raise BadRequest(f'the number of rows {value!r} is not an integer')

  def _discard(self, length):
    try:
      self.rfile.read(max(0, min(int(length or 0), MAX_BODY_BYTES)))
    except ValueError:
      self.close_connection = True

  def _error(self, status: int, message: str):
    self._reply(status, (message + '\n').encode('utf-8'),
                'text/plain; charset=utf-8')

  def _reply(self, status, body: bytes, content_type: str, headers=None):
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    pass  # one line per request would cost more than the identity model

  def log_error(self, format, *args):  # pylint: disable=redefined-builtin
    sys.stderr.write('xinfer-bench-server: %s\n' % (format % args))


def serve(model_path: str,
          port: int = 0,
          threads: int = 1,
          parent_pid: int = None) -> int:
  """Runs the server until SIGTERM/SIGINT or until the parent process ends."""
  server = ModelServer(model_path, port, threads)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  signal.signal(signal.SIGINT, lambda *_: stop.set())
  lifecycle.watch_parent(parent_pid, stop, or_reparented=True)
  thread = threading.Thread(target=server.serve_forever,
                            name='http',
                            daemon=True)
  thread.start()
  print(READY_PREFIX + json.dumps({
      'port': server.port,
      'url': f'http://{HOST}:{server.port}/predict',
      'model': os.path.basename(model_path),
      'threads': threads,
      'pid': os.getpid(),
  }),
        flush=True)
  stop.wait()
  server.shutdown()
  server.server_close()
  return 0
