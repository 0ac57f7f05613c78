"""The deployment manifests (runners-config/deploy/) hold the settings xinfer
depends on, and docs/deploy.md names each of them.

Offline: the manifests are parsed, never applied to a cluster. Each check
returns what is wrong and why xinfer needs it; the tests at the end break a
manifest on purpose to show that the checks see it.
"""

import copy
import os
import pathlib
import re
import secrets
import shlex

import pytest
import yaml

from xinfer import security
from xinfer import services

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / 'runners-config' / 'deploy'
KUBERNETES = DEPLOY / 'kubernetes'
STANDALONE = DEPLOY / 'standalone'
DOC = ROOT / 'docs' / 'deploy.md'

NODE_POOL = 'XINFER_NODE_WORKER_POOL'
NODE_POOL_SECRET_FILE = 'XINFER_NODE_WORKER_POOL_SECRET_FILE'
NODE_SLOTS = 'XINFER_NODE_SLOTS'
POOL_COMMAND = 'xinfer-worker-pool'
LOOPBACK = '127.0.0.1'


def _grpc_unpooled():
  """The TaskManagers' -D flag, as `./xinfer cluster up flink` passes it."""
  script = (ROOT / 'runners-config' / 'clusters' / 'clusters.sh').read_text()
  match = re.search(r'^GRPC_UNPOOLED="([^"]+)"$', script, re.MULTILINE)
  assert match, 'clusters.sh no longer sets GRPC_UNPOOLED'
  return '-D' + match.group(1)


GRPC_UNPOOLED = _grpc_unpooled()


def _load(path: pathlib.Path):
  with open(path, encoding='utf-8') as f:
    return yaml.safe_load(f)


def _rel(path: pathlib.Path) -> str:
  return path.relative_to(ROOT).as_posix()


def _pool_flags(argv, where):
  """(flags, problem): argv[1:] parsed by xinfer-worker-pool's own parser, so
  a flag the pool does not take is reported too."""
  parser = services._arguments(POOL_COMMAND, '', expansion=False)

  def refuse(message):
    raise ValueError(message)

  parser.error = refuse
  try:
    return parser.parse_args([str(a) for a in argv[1:]]), None
  except ValueError as e:
    return None, (f'{where}: {POOL_COMMAND} would not start with '
                  f'{shlex.join(map(str, argv[1:]))} ({str(e).strip()})')


def _pool_problems(flags, where):
  problems = []
  if flags.host != LOOPBACK:
    problems.append(
        f'{where}: the pool binds --host {flags.host}, not {LOOPBACK}: the '
        'TaskManager or executor beside it reaches it on loopback, and another '
        'address exposes the pool, whose secret travels unencrypted, to the '
        'network')
  if not flags.port:
    problems.append(
        f'{where}: the pool has no --port: {NODE_POOL} must name a fixed port')
  if not flags.secret_file:
    problems.append(
        f'{where}: the pool has no --secret-file: the TaskManager reads the '
        f'same file ({NODE_POOL_SECRET_FILE}) to present the pool\'s secret')
  if flags.allow_remote_runners:
    problems.append(
        f'{where}: the pool has --allow-remote-runners: it must start workers '
        'only for the runner beside it')
  return problems


def _node_env_problems(env, flags, where):
  """The runner's environment names the pool beside it and its secret file:
  xinfer reads both in the TaskManager (or executor) and serves each job's
  Python stages from that pool, with that secret."""
  problems = []
  want = f'{LOOPBACK}:{flags.port}'
  if env.get(NODE_POOL) != want:
    problems.append(
        f'{where}: {NODE_POOL} is {env.get(NODE_POOL)!r}, not {want!r} (the '
        'pool beside it): without it the Python stages go to the pool the job '
        'names instead of the one beside this runner, on its loopback')
  if env.get(NODE_POOL_SECRET_FILE) != flags.secret_file:
    problems.append(
        f'{where}: {NODE_POOL_SECRET_FILE} is '
        f'{env.get(NODE_POOL_SECRET_FILE)!r}, not the pool\'s --secret-file '
        f'{flags.secret_file!r}: the pool starts workers only for requests '
        'that carry its secret')
  slots = str(env.get(NODE_SLOTS, ''))
  if not slots.isdigit() or int(slots) < 1:
    problems.append(
        f'{where}: {NODE_SLOTS} is {env.get(NODE_SLOTS)!r}, not the node\'s '
        'task slots (executor cores): without it the node runs one SDK worker '
        'for all its slots, one core of Python')
  return problems


def _runs_the_pool(container):
  argv = _argv(container)
  return bool(argv) and os.path.basename(str(argv[0])) == POOL_COMMAND


def _argv(container):
  return list(container.get('command') or []) + list(
      container.get('args') or [])


def _env(container):
  return {
      e['name']: e.get('value')
      for e in container.get('env') or [] if 'name' in e
  }


def _mount_of(container, path):
  """The volume a container sees ``path`` in (the mount whose path holds it)."""
  for mount in container.get('volumeMounts') or []:
    if path.startswith(mount['mountPath'].rstrip('/') + '/'):
      return mount['name']
  return None


def pod_problems(spec, main, where, secret_name, secret_key):
  """What is wrong with a pod spec whose container ``main`` (a TaskManager or
  a Spark executor) runs its Python stages on a worker-pool sidecar."""
  problems = []
  containers = {c.get('name'): c for c in spec.get('containers') or []}
  if main not in containers:
    return [
        f'{where}: no container named {main}: it is the one that gets '
        f'{NODE_POOL}'
    ]
  pools = [c for c in containers.values() if _runs_the_pool(c)]
  if len(pools) != 1:
    return [
        f'{where}: {len(pools)} containers run {POOL_COMMAND}; one sidecar '
        f'must run it beside {main}'
    ]
  pool = pools[0]
  flags, problem = _pool_flags(_argv(pool), f'{where}: container '
                               f'{pool["name"]}')
  if problem:
    return [problem]
  problems += _pool_problems(flags, f'{where}: container {pool["name"]}')
  problems += _node_env_problems(_env(containers[main]), flags,
                                 f'{where}: container {main}')
  if not flags.secret_file:
    return problems

  # The secret file: one volume seen by both containers, filled from the Secret.
  volumes = {v.get('name'): v for v in spec.get('volumes') or []}
  shared = {}
  for name, container in ((main, containers[main]), (pool['name'], pool)):
    shared[name] = _mount_of(container, flags.secret_file)
    if shared[name] is None:
      problems.append(
          f'{where}: the secret file {flags.secret_file} is not mounted in '
          f'container {name}: the pool and the runner beside it must read the '
          'same secret')
  if None in shared.values():
    return problems
  if len(set(shared.values())) != 1:
    problems.append(
        f'{where}: containers {main} and {pool["name"]} see '
        f'{flags.secret_file} in different volumes {sorted(shared.values())}: '
        'they must read the same secret')
    return problems
  volume_name = shared[main]
  volume = volumes.get(volume_name, {})
  if 'secret' in volume:
    problems.append(
        f'{where}: {flags.secret_file} comes straight from the Secret volume '
        f'{volume_name}, whose files are symbolic links owned by root: xinfer '
        'refuses them as a secret file (a regular file of its own user, mode '
        '0600); copy it in an init container to an emptyDir')
  elif (volume.get('emptyDir') or {}).get('medium') != 'Memory':
    problems.append(
        f'{where}: the volume {volume_name} with the secret file is not an '
        'emptyDir in memory: the secret would be written to the node\'s disk')

  secret_volumes = {
      name: v['secret']
      for name, v in volumes.items() if 'secret' in v
  }
  copiers = []
  for init in spec.get('initContainers') or []:
    script = ' '.join(map(str, _argv(init)))
    mounts = {m['name']: m['mountPath'] for m in init.get('volumeMounts') or []}
    if (volume_name in mounts and 'install -m 600' in script
        and script.rstrip().endswith(flags.secret_file)
        and any(name in mounts for name in secret_volumes)):
      source = next(name for name in mounts if name in secret_volumes)
      copiers.append((init['name'], secret_volumes[source]))
  if len(copiers) != 1:
    problems.append(
        f'{where}: no init container copies the Secret to {flags.secret_file} '
        '(install -m 600 from a Secret volume): without it there is no secret '
        'file for the pool and the runner beside it to share')
  else:
    copier, secret = copiers[0]
    if secret.get('secretName') != secret_name:
      problems.append(f'{where}: init container {copier} copies the Secret '
                      f'{secret.get("secretName")!r}, not {secret_name!r} '
                      '(xinfer-secret.yaml)')
    keys = [item.get('key') for item in secret.get('items') or []]
    if keys and secret_key not in keys:
      problems.append(
          f'{where}: the Secret volume does not hold the key {secret_key!r}')

  # One user: the pool reads only a secret file of its own user, and the
  # runner only a file no other user can read.
  context = spec.get('securityContext') or {}
  if context.get('runAsUser') is None or context.get('fsGroup') is None:
    problems.append(
        f'{where}: the pod sets no runAsUser and fsGroup: every container must '
        'run as the user that owns the copied secret file (mode 0600), and '
        'fsGroup lets that user read the Secret volume to copy it')
  for container in list(containers.values()) + list(
      spec.get('initContainers') or []):
    user = (container.get('securityContext') or {}).get('runAsUser')
    if user is not None and user != context.get('runAsUser'):
      problems.append(
          f'{where}: container {container["name"]} runs as user {user}, not '
          f'{context.get("runAsUser")}: the copied secret file belongs to '
          f'{context.get("runAsUser")}, and xinfer reads it only as its owner')
  return problems


def _java17_opens():
  with open(ROOT / 'runners-config' / 'java17.args', encoding='utf-8') as f:
    return [line.strip() for line in f if line.strip()]


def flink_problems(doc, secret_name, secret_key):
  where = 'flink-deployment.yaml'
  problems = []
  if (doc.get('apiVersion'), doc.get('kind')) != ('flink.apache.org/v1beta1',
                                                  'FlinkDeployment'):
    problems.append(
        f'{where}: not a flink.apache.org/v1beta1 FlinkDeployment (the Flink '
        'Kubernetes operator\'s resource)')
  spec = doc.get('spec') or {}
  if spec.get('flinkVersion') != 'v1_19':
    problems.append(
        f'{where}: flinkVersion is {spec.get("flinkVersion")!r}, not v1_19: '
        'xinfer runs on Beam\'s Flink 1.19 runner')
  image = str(spec.get('image', ''))
  if '1.19' not in image or 'java17' not in image:
    problems.append(
        f'{where}: image {image!r} is not a Flink 1.19 image on Java 17: '
        'xinfer\'s jars are built for Java 17')
  if not spec.get('serviceAccount'):
    problems.append(
        f'{where}: no serviceAccount: the JobManager starts TaskManager pods '
        'with it')
  if 'job' in spec:
    problems.append(
        f'{where}: spec.job is set: xinfer\'s launcher submits job graphs to '
        'a session cluster')
  conf = spec.get('flinkConfiguration') or {}
  for key, value in conf.items():
    if not isinstance(value, str):
      problems.append(
          f'{where}: flinkConfiguration {key} is {value!r}, not a string: the '
          'CRD takes a map of strings')
  slots = str(conf.get('taskmanager.numberOfTaskSlots', ''))
  if not slots.isdigit() or int(slots) < 1:
    problems.append(
        f'{where}: taskmanager.numberOfTaskSlots is not set: the slots of a '
        'TaskManager share its pod\'s pool, and --parallelism counts them')
  wanted = {
      'jobmanager.execution.failover-strategy': (
          'full',
          'a TaskManager\'s tasks share its SDK worker; a region restart '
          'gets the dead worker again'),
      'classloader.resolve-order': (
          'child-first', 'each Beam job brings its own Beam and gRPC'),
      'web.submit.enable': (
          'false', 'no jar upload or run through the REST API and web UI'),
  }
  for key, (value, why) in wanted.items():
    if str(conf.get(key)).lower() != value:
      problems.append(
          f'{where}: flinkConfiguration {key} is {conf.get(key)!r}, not '
          f'{value}: {why}')
  if GRPC_UNPOOLED not in str(conf.get('env.java.opts.taskmanager',
                                       '')).split():
    problems.append(
        f'{where}: env.java.opts.taskmanager lacks {GRPC_UNPOOLED}: each job\'s '
        'gRPC pools Netty direct memory until its class loader goes, and '
        'back-to-back jobs ran a TaskManager out of direct memory')
  opts = str(conf.get('env.java.opts.all', '')).split()
  missing = [o for o in _java17_opens() if o not in opts]
  if missing:
    problems.append(f'{where}: env.java.opts.all lacks {missing} of '
                    'runners-config/java17.args, which Beam needs on Java 17')
  for role in ('jobManager', 'taskManager'):
    resource = (spec.get(role) or {}).get('resource') or {}
    if not resource.get('memory') or not resource.get('cpu'):
      problems.append(
          f'{where}: {role}.resource needs memory and cpu (the operator '
          'sizes the pods from them)')
  template = ((spec.get('taskManager') or {}).get('podTemplate') or {})
  main = [
      c for c in ((template.get('spec') or {}).get('containers') or [])
      if c.get('name') == 'flink-main-container'
  ]
  if main and slots.isdigit() and _env(main[0]).get(NODE_SLOTS) != slots:
    problems.append(
        f'{where}: {NODE_SLOTS} is {_env(main[0]).get(NODE_SLOTS)!r}, not '
        f'taskmanager.numberOfTaskSlots {slots!r}: one SDK worker per slot')
  problems += pod_problems(
      template.get('spec') or {}, 'flink-main-container',
      f'{where}: taskManager.podTemplate', secret_name, secret_key)
  return problems


def spark_problems(doc, secret_name, secret_key):
  where = 'spark-executor-pod-template.yaml'
  if (doc.get('apiVersion'), doc.get('kind')) != ('v1', 'Pod'):
    return [f'{where}: not a v1 Pod (Spark\'s executor pod template)']
  return pod_problems(
      doc.get('spec') or {}, 'spark-executor', where, secret_name, secret_key)


def secret_problems(doc, scratch: pathlib.Path):
  where = 'xinfer-secret.yaml'
  problems = []
  if (doc.get('apiVersion'), doc.get('kind')) != ('v1', 'Secret'):
    return [f'{where}: not a v1 Secret']
  if doc.get('data'):
    problems.append(
        f'{where}: holds data (base64 values): a template in the repository '
        'must hold no secret')
  values = doc.get('stringData') or {}
  if list(values) != ['pool.secret']:
    problems.append(
        f'{where}: stringData holds {sorted(values)}, not the one key '
        'pool.secret that the pods copy')
  for key, value in values.items():
    path = scratch / key
    path.write_text(str(value), encoding='utf-8')
    os.chmod(path, 0o600)
    try:
      security.read_secret_file(str(path), create=False)
    except SystemExit:
      continue  # xinfer refuses it: a placeholder, as it should be
    problems.append(
        f'{where}: {key} holds a value xinfer accepts as a secret: a template '
        'in the repository must hold a placeholder (anyone can read it)')
  return problems


def _env_file(text):
  env = {}
  for line in text.splitlines():
    line = line.strip()
    if line and not line.startswith('#') and '=' in line:
      key, value = line.split('=', 1)
      env[key.strip()] = value.strip().strip('"')
  return env


def _unit(text):
  """The systemd unit's keys, per section (the last value of a key)."""
  sections, current = {}, None
  for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith(('#', ';')):
      continue
    if line.startswith('[') and line.endswith(']'):
      current = sections.setdefault(line[1:-1], {})
    elif '=' in line and current is not None:
      key, value = line.split('=', 1)
      current[key.strip()] = value.strip()
  return sections


def standalone_problems(unit_text, env_text):
  where = 'standalone'
  service = _unit(unit_text).get('Service', {})
  if not service.get('User'):
    return [
        f'{where}: xinfer-worker-pool.service names no User: the pool must '
        'run as the TaskManager\'s user, who owns the secret file'
    ]
  argv = shlex.split(service.get('ExecStart', ''))
  if not argv or os.path.basename(argv[0]) != POOL_COMMAND:
    return [f'{where}: xinfer-worker-pool.service does not run {POOL_COMMAND}']
  flags, problem = _pool_flags(argv, f'{where}: xinfer-worker-pool.service')
  if problem:
    return [problem]
  return _pool_problems(flags, f'{where}: xinfer-worker-pool.service') + \
      _node_env_problems(_env_file(env_text), flags,
                         f'{where}: taskmanager.env')


@pytest.fixture(scope='module')
def secret_doc():
  return _load(KUBERNETES / 'xinfer-secret.yaml')


@pytest.fixture(scope='module')
def secret_ref(secret_doc):
  return secret_doc['metadata']['name'], 'pool.secret'


@pytest.fixture
def flink_doc():
  return _load(KUBERNETES / 'flink-deployment.yaml')


@pytest.fixture
def spark_doc():
  return _load(KUBERNETES / 'spark-executor-pod-template.yaml')


def test_the_flink_deployment_runs_a_pool_beside_each_taskmanager(
    flink_doc, secret_ref):
  problems = flink_problems(flink_doc, *secret_ref)
  assert not problems, '\n'.join(problems)


def test_the_spark_executor_template_runs_a_pool_beside_each_executor(
    spark_doc, secret_ref):
  problems = spark_problems(spark_doc, *secret_ref)
  assert not problems, '\n'.join(problems)


def test_the_secret_template_holds_no_secret(secret_doc, tmp_path):
  problems = secret_problems(secret_doc, tmp_path)
  assert not problems, '\n'.join(problems)


def test_the_standalone_pool_and_taskmanager_name_the_same_pool():
  problems = standalone_problems(
      (STANDALONE / 'xinfer-worker-pool.service').read_text(encoding='utf-8'),
      (STANDALONE / 'taskmanager.env').read_text(encoding='utf-8'))
  assert not problems, '\n'.join(problems)


def test_the_variables_are_the_ones_java_reads():
  runtime = (ROOT / 'java-transforms' / 'src' / 'main' / 'java' / 'dev' /
             'xinfer' / 'runtime')
  for name, reader in ((NODE_POOL, 'BoundedExternalEnvironmentFactory'),
                       (NODE_POOL_SECRET_FILE,
                        'BoundedExternalEnvironmentFactory'),
                       (NODE_SLOTS, 'LoopbackFnServers')):
    java = (runtime / f'{reader}.java').read_text(encoding='utf-8')
    assert f'"{name}"' in java, (
        f'{reader} no longer reads {name}: the manifests and docs/deploy.md '
        'set it on every TaskManager')


def test_the_guide_names_every_manifest_and_the_readme_links_it():
  doc = DOC.read_text(encoding='utf-8')
  manifests = sorted(p for p in DEPLOY.rglob('*') if p.is_file())
  assert manifests, f'no manifests under {_rel(DEPLOY)}'
  for path in manifests:
    assert _rel(path) in doc, (
        f'docs/deploy.md does not name {_rel(path)}: the guide and the '
        'manifests must stay in step')
  for setting in (NODE_POOL, NODE_POOL_SECRET_FILE,
                  'spark.kubernetes.executor.podTemplateContainerName='
                  'spark-executor', 'xinfer.cluster.runtime-jars',
                  'spark.authenticate', '--xinferWorkerPool'):
    assert setting in doc, f'docs/deploy.md does not say {setting}'
  readme = (ROOT / 'README.md').read_text(encoding='utf-8')
  assert 'docs/deploy.md' in readme, 'README.md does not link docs/deploy.md'


def _taskmanager(doc):
  spec = doc['spec']['taskManager']['podTemplate']['spec']
  return {c['name']: c for c in spec['containers']}, spec


def _without_env(name):
  """Breaks a FlinkDeployment: the TaskManager's environment lacks `name`."""
  def breaks(doc):
    containers, _ = _taskmanager(doc)
    env = containers['flink-main-container']['env']
    env[:] = [e for e in env if e['name'] != name]

  breaks.__name__ = f'without_{name}'
  return breaks


def _with_env(name, value):
  """Breaks a FlinkDeployment: the TaskManager's `name` is `value`."""
  def breaks(doc):
    containers, _ = _taskmanager(doc)
    for e in containers['flink-main-container']['env']:
      if e['name'] == name:
        e['value'] = value

  breaks.__name__ = f'{name}_{value}'
  return breaks


def _pool_on_all_interfaces(doc):
  containers, _ = _taskmanager(doc)
  command = containers['xinfer-worker-pool']['command']
  command[command.index('--host') + 1] = '0.0.0.0'


def _unknown_pool_flag(doc):
  containers, _ = _taskmanager(doc)
  containers['xinfer-worker-pool']['command'].append('--bind-all')


def _secret_not_in_the_pool(doc):
  containers, _ = _taskmanager(doc)
  pool = containers['xinfer-worker-pool']
  pool['volumeMounts'] = [
      m for m in pool['volumeMounts'] if m['mountPath'] != '/var/run/xinfer'
  ]


def _secret_volume_straight(doc):
  _, spec = _taskmanager(doc)
  for volume in spec['volumes']:
    if volume['name'] == 'xinfer-pool-secret':
      volume.pop('emptyDir')
      volume['secret'] = {'secretName': 'xinfer-worker-pool-secret'}


def _no_copy(doc):
  _, spec = _taskmanager(doc)
  spec['initContainers'] = []


def _another_user(doc):
  containers, _ = _taskmanager(doc)
  containers['xinfer-worker-pool']['securityContext'] = {'runAsUser': 0}


def _flink_1_18(doc):
  doc['spec']['flinkVersion'] = 'v1_18'


def _no_slots(doc):
  del doc['spec']['flinkConfiguration']['taskmanager.numberOfTaskSlots']


def _pooled_grpc(doc):
  del doc['spec']['flinkConfiguration']['env.java.opts.taskmanager']


def _region_failover(doc):
  doc['spec']['flinkConfiguration'][
      'jobmanager.execution.failover-strategy'] = 'region'


@pytest.mark.parametrize('breaks, reported', [
    (_without_env(NODE_POOL), f'{NODE_POOL} is None'),
    (_with_env(NODE_POOL, '127.0.0.1:50100'), "not '127.0.0.1:50000'"),
    (_pool_on_all_interfaces, 'binds --host 0.0.0.0'),
    (_unknown_pool_flag, 'would not start with'),
    (_secret_not_in_the_pool, 'is not mounted in container xinfer-worker-pool'),
    (_secret_volume_straight, 'symbolic links owned by root'),
    (_no_copy, 'no init container copies the Secret'),
    (_another_user, 'runs as user 0'),
    (_flink_1_18, "flinkVersion is 'v1_18'"),
    (_no_slots, 'taskmanager.numberOfTaskSlots is not set'),
    (_region_failover, "failover-strategy is 'region'"),
    (_pooled_grpc, 'env.java.opts.taskmanager lacks'),
    (_with_env(NODE_SLOTS, '4'), "XINFER_NODE_SLOTS is '4', not"),
    (_without_env(NODE_SLOTS), 'XINFER_NODE_SLOTS is None'),
])
def test_a_broken_flink_deployment_is_reported(flink_doc, secret_ref, breaks,
                                               reported):
  broken = copy.deepcopy(flink_doc)
  breaks(broken)
  problems = flink_problems(broken, *secret_ref)
  assert any(reported in p for p in problems), (
      f'{breaks.__name__}: expected a problem with {reported!r}, got '
      f'{problems}')


def test_a_secret_template_with_a_real_value_is_reported(secret_doc, tmp_path):
  broken = copy.deepcopy(secret_doc)
  broken['stringData']['pool.secret'] = secrets.token_hex(32)
  problems = secret_problems(broken, tmp_path)
  assert any('holds a value xinfer accepts' in p for p in problems), problems


def test_a_standalone_env_naming_another_secret_file_is_reported():
  unit = (STANDALONE / 'xinfer-worker-pool.service').read_text(encoding='utf-8')
  env = (STANDALONE / 'taskmanager.env').read_text(encoding='utf-8')
  problems = standalone_problems(
      unit, env.replace('/etc/xinfer/pool.secret', '/tmp/pool.secret'))
  assert any(NODE_POOL_SECRET_FILE in p for p in problems), problems
