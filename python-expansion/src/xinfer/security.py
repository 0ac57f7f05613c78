"""Who may call xinfer's services, and what an expansion request may hold.

Every service xinfer starts serves only callers that hold the run's secret:

- the expansion service checks the ``xinfer-token`` header of each call
  (``TokenInterceptor``);
- a worker pool checks the ``xinfer_token`` parameter of each request to start
  a worker: Beam's runners send the EXTERNAL environment's parameters with it,
  and the expansion service writes the pool's secret there.

Beam's expansion service decodes every transform, coder and windowing strategy
in a request's components before it looks at the transform; a pickled one runs
its code then. ``check_expansion_request`` reads the request's protos first and
refuses anything but what ``xinfer.transforms.RowInference`` needs, so nothing
is decoded for a request it refuses.
"""

import hmac
import inspect
import logging
import os
import secrets
import stat
import sys
from typing import Callable, Optional, Sequence

import grpc
from apache_beam.coders import row_coder
from apache_beam.portability import common_urns
from apache_beam.portability.api import external_transforms_pb2
from apache_beam.portability.api import schema_pb2
from apache_beam.transforms import fully_qualified_named_transform

_LOGGER = logging.getLogger('xinfer.security')

HEADER = 'xinfer-token'
POOL_PARAM = 'xinfer_token'
MIN_SECRET_LENGTH = 32

FULLY_QUALIFIED_NAMED_URN = (
    fully_qualified_named_transform.PYTHON_FULLY_QUALIFIED_NAMED_TRANSFORM_URN)

# What a Java pipeline sends for RowInference's input: its PCollections (Rows, or
# KVs of string and Row), their windowing, the fake Impulse that produces each,
# and the Java environment.
_CODERS = frozenset([
    common_urns.coders.BYTES.urn,
    common_urns.coders.STRING_UTF8.urn,
    common_urns.coders.KV.urn,
    common_urns.coders.BOOL.urn,
    common_urns.coders.VARINT.urn,
    common_urns.coders.DOUBLE.urn,
    common_urns.coders.ITERABLE.urn,
    common_urns.coders.INTERVAL_WINDOW.urn,
    common_urns.coders.LENGTH_PREFIX.urn,
    common_urns.coders.GLOBAL_WINDOW.urn,
    common_urns.coders.WINDOWED_VALUE.urn,
    common_urns.coders.ROW.urn,
    common_urns.coders.NULLABLE.urn,
])
_WINDOW_FNS = frozenset([
    'beam:window_fn:global_windows:v1',
    'beam:window_fn:fixed_windows:v1',
    'beam:window_fn:sliding_windows:v1',
    'beam:window_fn:session_windows:v1',
])
_TRANSFORMS = frozenset([common_urns.primitives.IMPULSE.urn])
_ENVIRONMENTS = frozenset([
    common_urns.environments.DOCKER.urn,
    common_urns.environments.PROCESS.urn,
    common_urns.environments.EXTERNAL.urn,
    common_urns.environments.DEFAULT.urn,
    # Java's EMBEDDED environment (the DirectRunner's shadow pipeline uses it).
    'EMBEDDED',
])
# Logical types whose Python side decodes plain values (no code, no pickle).
_LOGICAL_TYPES = frozenset([
    common_urns.millis_instant.urn,
    common_urns.micros_instant.urn,
    common_urns.decimal.urn,
    common_urns.fixed_bytes.urn,
    common_urns.var_bytes.urn,
    common_urns.fixed_char.urn,
    common_urns.var_char.urn,
])
_KWARG_TYPES = frozenset([
    schema_pb2.BOOLEAN, schema_pb2.INT32, schema_pb2.INT64, schema_pb2.FLOAT,
    schema_pb2.DOUBLE, schema_pb2.STRING
])


class Refused(ValueError):
  """An expansion request xinfer does not serve."""


def tokens_match(given: Optional[str], secret: str) -> bool:
  return given is not None and hmac.compare_digest(given.encode('utf-8'),
                                                   secret.encode('utf-8'))


class TokenInterceptor(grpc.ServerInterceptor):
  """Refuses every call that does not carry the run's secret in ``HEADER``."""
  def __init__(self, secret: str, service: str):
    self._secret = secret
    self._service = service

  def intercept_service(self, continuation, handler_call_details):
    given = dict(handler_call_details.invocation_metadata or ()).get(HEADER)
    if tokens_match(given, self._secret):
      return continuation(handler_call_details)
    _LOGGER.warning('Refused a call to %s without the run\'s secret.',
                    handler_call_details.method)
    message = (
        f'xinfer {self._service}: refused: this call does not carry the secret '
        f'of the run ("{HEADER}" header). Only the JVM that started the '
        'service may call it; for a service you started by hand, give the '
        'pipeline its secret file (withExpansionService(hostPort, secretFile)).'
    )

    def refuse(unused_request, context):
      context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


def check_expansion_request(request, allowed: Sequence[str],
                            signature_of: Callable[[str], inspect.Signature]):
  """Raises Refused unless ``request`` expands one of ``allowed`` from plain
  arguments over inputs of plain coders; reads protos only, decodes nothing."""
  spec = request.transform.spec
  if spec.urn != FULLY_QUALIFIED_NAMED_URN:
    raise Refused(f'transform URN {spec.urn!r} is not served; xinfer expands '
                  f'only {FULLY_QUALIFIED_NAMED_URN} for {", ".join(allowed)}')
  if request.transform.subtransforms or request.transform.environment_id:
    raise Refused('the transform to expand must be a bare external transform')
  components = request.components
  for name, transform in components.transforms.items():
    if (transform.spec.urn not in _TRANSFORMS or transform.inputs
        or transform.subtransforms or transform.spec.payload):
      raise Refused(f'component transform {name!r} ({transform.spec.urn!r}) '
                    'is not an input of the transform; only Impulse stand-ins '
                    'for the inputs are accepted')
  for name, coder in components.coders.items():
    if coder.spec.urn not in _CODERS:
      raise Refused(f'coder {name!r} has URN {coder.spec.urn!r}; only Beam\'s '
                    'standard coders are accepted')
    for component in coder.component_coder_ids:
      if component not in components.coders:
        raise Refused(f'coder {name!r} names a missing coder {component!r}')
    if coder.spec.urn == common_urns.coders.ROW.urn:
      schema = schema_pb2.Schema()
      schema.ParseFromString(coder.spec.payload)
      _check_schema(schema, f'coder {name!r}')
    elif coder.spec.payload:
      raise Refused(f'coder {name!r} ({coder.spec.urn}) carries a payload')
  for name, strategy in components.windowing_strategies.items():
    if strategy.window_fn.urn not in _WINDOW_FNS:
      raise Refused(f'windowing strategy {name!r} has window function '
                    f'{strategy.window_fn.urn!r}; only global, fixed, sliding '
                    'and session windows are accepted')
    if strategy.window_coder_id not in components.coders:
      raise Refused(f'windowing strategy {name!r} names a missing coder')
  for name, environment in components.environments.items():
    if environment.urn not in _ENVIRONMENTS:
      raise Refused(f'environment {name!r} has URN {environment.urn!r}')
  for name, pcoll in components.pcollections.items():
    if (pcoll.coder_id not in components.coders
        or pcoll.windowing_strategy_id not in components.windowing_strategies):
      raise Refused(f'PCollection {name!r} names a missing coder or windowing '
                    'strategy')
  for tag, pcoll_id in request.transform.inputs.items():
    if pcoll_id not in components.pcollections:
      raise Refused(f'input {tag!r} names a missing PCollection')
  for tag, coder_id in request.output_coder_requests.items():
    if coder_id not in components.coders:
      raise Refused(f'output {tag!r} names a missing coder')
  _check_payload(spec.payload, allowed, signature_of)


def _check_payload(payload_bytes: bytes, allowed: Sequence[str],
                   signature_of: Callable[[str], inspect.Signature]):
  payload = external_transforms_pb2.ExternalConfigurationPayload()
  payload.ParseFromString(payload_bytes)
  fields = {field.name: field for field in payload.schema.fields}
  constructor = fields.get('constructor')
  args = fields.get('args')
  if (constructor is None or constructor.type.atomic_type != schema_pb2.STRING
      or set(fields) - {'constructor', 'args', 'kwargs'}
      or (args is not None and (args.type.WhichOneof('type_info') != 'row_type'
                                or args.type.row_type.schema.fields))):
    raise Refused('the transform\'s payload must hold a constructor name and '
                  'keyword arguments only')
  kwargs = fields.get('kwargs')
  if kwargs is not None:
    if kwargs.type.WhichOneof('type_info') != 'row_type':
      raise Refused('the keyword arguments must be a Row')
    for field in kwargs.type.row_type.schema.fields:
      if (field.type.WhichOneof('type_info') != 'atomic_type'
          or field.type.atomic_type not in _KWARG_TYPES):
        raise Refused(f'keyword argument {field.name!r} is not a string, '
                      'number or boolean')
  _check_schema(payload.schema, 'the payload')
  # Plain atomic fields only (checked above): decoding runs no code.
  row = row_coder.RowCoder(payload.schema).decode(payload.payload)
  if row.constructor not in allowed:
    raise Refused(f'"{row.constructor}" is not on the allowlist '
                  f'({", ".join(allowed)})')
  if kwargs is not None:
    names = [field.name for field in kwargs.type.row_type.schema.fields]
    parameters = signature_of(row.constructor).parameters
    unknown = [name for name in names if name not in parameters]
    if unknown:
      raise Refused(f'{row.constructor} takes no argument(s) '
                    f'{", ".join(unknown)}')


def _check_schema(schema, where: str):
  if schema.options:
    raise Refused(f'{where}: schema options are not accepted')
  for field in schema.fields:
    if field.options:
      raise Refused(f'{where}: field options are not accepted ({field.name})')
    _check_field_type(field.type, f'{where}, field {field.name!r}')


def _check_field_type(field_type, where: str):
  kind = field_type.WhichOneof('type_info')
  if kind == 'atomic_type':
    return
  if kind in ('array_type', 'iterable_type'):
    _check_field_type(getattr(field_type, kind).element_type, where)
  elif kind == 'map_type':
    _check_field_type(field_type.map_type.key_type, where)
    _check_field_type(field_type.map_type.value_type, where)
  elif kind == 'row_type':
    _check_schema(field_type.row_type.schema, where)
  elif kind == 'logical_type':
    logical = field_type.logical_type
    if logical.urn not in _LOGICAL_TYPES:
      raise Refused(f'{where}: logical type {logical.urn!r} is not accepted')
    _check_field_type(logical.representation, where)
    if logical.HasField('argument_type'):
      _check_field_type(logical.argument_type, where)
  else:
    raise Refused(f'{where}: unknown field type {kind!r}')


def read_secret_file(path: str, create: bool) -> str:
  """The secret in ``path``, a file only its owner may read; with ``create``,
  a missing file is made with a new secret (mode 0600)."""
  path = os.path.abspath(path)
  if create and not os.path.lexists(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as f:
      f.write(secrets.token_hex(32) + '\n')
  try:
    info = os.lstat(path)
  except FileNotFoundError:
    raise SystemExit(f'xinfer: no secret file {path}.') from None
  if not stat.S_ISREG(info.st_mode):
    raise SystemExit(f'xinfer: the secret file {path} is not a regular file.')
  if info.st_mode & 0o077:
    raise SystemExit(
        f'xinfer: the secret file {path} can be read or written by other users '
        f'(mode {stat.filemode(info.st_mode)}); make it private: chmod 600 '
        f'{path}')
  if info.st_uid != os.getuid():
    raise SystemExit(f'xinfer: the secret file {path} belongs to another user.')
  with open(path, encoding='utf-8') as f:
    return _checked(f.read().strip(), f'the secret file {path}')


def read_secrets_from_stdin():
  """(the service's secret, the worker pool's or None): two lines on standard
  input, as the Java side writes them."""
  first = sys.stdin.readline().strip()
  second = sys.stdin.readline().strip()
  return _checked(first, 'standard input'), (_checked(second, 'standard input')
                                             if second else None)


def _checked(secret: str, where: str) -> str:
  if len(secret) < MIN_SECRET_LENGTH or any(c.isspace() for c in secret):
    raise SystemExit(
        f'xinfer: {where} does not hold a secret of at least '
        f'{MIN_SECRET_LENGTH} characters (no spaces); let xinfer write it '
        '(--secret-file creates a missing file).')
  return secret


def new_secret() -> str:
  return secrets.token_hex(32)
