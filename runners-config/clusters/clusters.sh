# shellcheck shell=bash
# Sourced by ./xinfer (`./xinfer cluster up|down|status`, and the tests): real single-machine
# clusters on 127.0.0.1 (Kafka; Flink and Spark, each with a Python worker pool beside it),
# started from Maven artifacts. It uses the entry script's ROOT, STATE, CLUSTERS, VENV, MVN and
# CLEANUP, and its step, note, die, fingerprint and check_tools.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {  # PORT SECONDS WHAT LOG
  local port=$1 deadline=$((SECONDS + $2))
  until port_open "$port"; do
    if [ $SECONDS -ge $deadline ]; then
      tail -20 "$4" >&2 || true
      die "$3 did not open 127.0.0.1:$port within $2 s; its log is $4 (last lines above)."
    fi
    sleep 0.5
  done
}

cluster_classpath() {  # NAME [PROFILE]: resolve the component's jars once per POM change
  local name=$1 profile=${2:-} dir="$CLUSTERS/$1" want have="" out
  out="$dir/classpath${profile:+-$profile}.txt"
  # The clusters' logs, data and secrets are this user's alone.
  mkdir -p "$dir" && chmod 700 "$CLUSTERS" "$dir"
  want=$(fingerprint pom.xml "runners-config/clusters/$name/pom.xml")
  [ -f "$out.stamp" ] && have=$(cat "$out.stamp")
  if [ "$want" != "$have" ] || [ ! -s "$out" ]; then
    note "resolving $name${profile:+ $profile} jars with Maven (first time: a download)" >&2
    (cd "$ROOT" && "${MVN[@]}" -q -f "runners-config/clusters/$name/pom.xml" ${profile:+-P "$profile"} \
      dependency:build-classpath -Dmdep.outputFile="$out") >&2 \
      || die "could not resolve the $name${profile:+ $profile} jars (Maven failed above)."
    echo "$want" > "$out.stamp"
  fi
  cat "$out"
}

# Whether the process a pid file names still runs: the same pid and the same start time.
cluster_pid_alive() {
  [ -f "$1" ] && [ -f "$1.start" ] && kill -0 "$(cat "$1")" 2>/dev/null \
    && [ "$(process_start_time "$(cat "$1")")" = "$(cat "$1.start")" ]
}

# cluster_is_up NAME DIR PORT PROC...: whether every process (DIR/PROC.pid) runs and PORT
# answers. A cluster that is partly up (a process died) is stopped (NAME_down), so that a false
# answer always means "start it".
cluster_is_up() {
  local name=$1 dir=$2 port=$3 proc alive=0 dead=0; shift 3
  for proc in "$@"; do
    if cluster_pid_alive "$dir/$proc.pid"; then alive=$((alive + 1)); else dead=$((dead + 1)); fi
  done
  [ "$dead" = 0 ] && port_open "$port" && return 0
  if [ "$alive" -gt 0 ]; then
    note "$name is partly up (a process died): restarting it"
    "${name}_down"
  fi
  return 1
}

# cluster_ports_free HINT PORT...: fails, naming the variables in HINT, when a port is taken.
cluster_ports_free() {
  local hint=$1 port; shift
  for port in "$@"; do
    port_open "$port" && die "127.0.0.1:$port is taken by another process; stop it, or set $hint."
  done
  return 0
}

kafka_up() {
  local dir="$CLUSTERS/kafka" port="${XINFER_KAFKA_PORT:-9092}" cport="${XINFER_KAFKA_CONTROLLER_PORT:-9093}"
  if cluster_pid_alive "$dir/kafka.pid" && port_open "$port"; then
    note "kafka already up on 127.0.0.1:$port (pid $(cat "$dir/kafka.pid"))"; return
  fi
  port_open "$port" && die "127.0.0.1:$port is taken by another process; set XINFER_KAFKA_PORT to a free port."
  step "Starting Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/pom.xml") (KRaft, one node) on 127.0.0.1:$port"
  local cp; cp=$(cluster_classpath kafka) || exit $?
  mkdir -p "$dir/data"
  sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$cport#g" -e "s#@DATA@#$dir/data#g" \
    "$ROOT/runners-config/clusters/kafka/server.properties" > "$dir/server.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id
    id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>> "$dir/kafka.log" | tail -1) \
      || die "Kafka's StorageTool did not run; see $dir/kafka.log."
    java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >> "$dir/kafka.log" 2>&1 \
      || die "formatting Kafka's storage failed; see $dir/kafka.log."
  fi
  start_daemon kafka "$dir/kafka.pid" "$dir/kafka.log" \
    java -Xms256m -Xmx512m -cp "$cp" kafka.Kafka "$dir/server.properties"
  wait_for_port "$port" 90 "Kafka" "$dir/kafka.log"
  note "kafka up: bootstrap servers 127.0.0.1:$port (pid $(cat "$dir/kafka.pid"), log $dir/kafka.log)"
}

# Starts a background JVM or process, recording its pid and what it runs: NAME PIDFILE LOG COMMAND...
start_daemon() {
  local name=$1 pidfile=$2 log=$3; shift 3
  nohup setsid "$@" >> "$log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  # A process that is gone at once leaves an empty start time; the readiness wait reports it.
  process_start_time $! > "$pidfile.start" || true
  note "$name started (pid $!, log $log)"
}

# The kernel's start time of a process (field 22 of /proc/PID/stat): with the pid, it names one
# process for good, so a stale pid file never names another.
process_start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# The cluster's Python worker pool: DIR PORT. It starts workers only for requests that carry the
# secret in DIR/pool.secret (made by the pool on first start, mode 0600), which jobs get with
# --xinferWorkerPoolSecretFile; hooks may come from the modules in $XINFER_ALLOWED_MODULES.
start_worker_pool() {  # DIR PORT [NODE]: NODE 2, 3...: files worker-pool-NODE.*, pool-NODE.secret
  local dir=$1 port=$2 sfx=${3:+-$3}
  start_daemon "Python worker pool${3:+ of node $3}" "$dir/worker-pool$sfx.pid" "$dir/worker-pool$sfx.log" \
    "$VENV/bin/xinfer-worker-pool" --port "$port" --secret-file "$dir/pool$sfx.secret" \
    --allowed-modules "${XINFER_ALLOWED_MODULES:-}"
  wait_for_port "$port" 60 "the Python worker pool" "$dir/worker-pool$sfx.log"
}

# The JVM flags Flink's own scripts compute for a JobManager or TaskManager: JVM line, then
# dynamic properties line.
flink_resource_params() {  # JM|TM CLASSPATH CONFDIR
  java -cp "$2" org.apache.flink.runtime.util.bash.BashJavaUtils "GET_$1_RESOURCE_PARAMS" --configDir "$3" 2>/dev/null \
    | sed -n 's/^BASH_JAVA_UTILS_EXEC_RESULT://p'
}

# Mutual TLS for the Flink cluster: its REST API (job submission, cancellation, the web UI) and
# its internal connections (RPC, blob server, data) accept only a peer that holds the cluster's
# key, which lives in DIR/tls (this user's alone). Made once: a key pair for 127.0.0.1, its trust
# store, and the settings (DIR/tls/ssl.yaml) that the cluster's configuration and the clients'
# (DIR/client-conf, for --flinkConfDir) both take.
flink_tls() (  # a subshell: the umask stays in it
  local tls="$1/tls"
  [ -s "$tls/ssl.yaml" ] && return
  umask 077
  rm -rf "$tls" && mkdir -p "$tls"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tls/password"
  local pw; pw=$(cat "$tls/password")
  keytool -genkeypair -alias flink -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=xinfer-flink" \
    -ext "SAN=ip:127.0.0.1,dns:localhost" -storetype PKCS12 -keystore "$tls/keystore.p12" \
    -storepass:file "$tls/password" -keypass:file "$tls/password" > "$tls/keytool.log" 2>&1 \
    && keytool -exportcert -alias flink -rfc -keystore "$tls/keystore.p12" \
      -storepass:file "$tls/password" -file "$tls/flink.pem" >> "$tls/keytool.log" 2>&1 \
    && keytool -importcert -noprompt -alias flink -file "$tls/flink.pem" -storetype PKCS12 \
      -keystore "$tls/truststore.p12" -storepass:file "$tls/password" >> "$tls/keytool.log" 2>&1 \
    || die "keytool could not make the Flink cluster's TLS key; see $tls/keytool.log."
  local stores="keystore: $tls/keystore.p12, keystore-password: $pw, key-password: $pw, truststore: $tls/truststore.p12, truststore-password: $pw"
  printf 'security:\n  ssl:\n    internal: { enabled: true, %s }\n    rest: { enabled: true, authentication-enabled: true, %s }\n' \
    "$stores" "$stores" > "$tls/ssl.yaml"
)

# Flink's nodes: TaskManager k (1..N) with its own Python worker pool on port POOL+100*(k-1), its
# own secret, and XINFER_NODE_WORKER_POOL set, so that its tasks run their Python stages beside
# them (a job names node 1's pool). Node 1's files are taskmanager.*, worker-pool.*, pool.secret;
# node k's taskmanager-k.*, worker-pool-k.*, pool-k.secret. $dir/nodes holds "N SLOTS".
flink_nodes() { if [ -f "$1/nodes" ]; then cut -d' ' -f1 "$1/nodes"; else echo 1; fi; }
flink_node_procs() {  # DIR: the pid-file names of every node's processes
  local k sfx
  for k in $(seq 1 "$(flink_nodes "$1")"); do
    sfx=$([ "$k" = 1 ] || echo "-$k")
    echo "taskmanager$sfx worker-pool$sfx"
  done
}

# Every job brings its own Beam and gRPC (child-first): with Netty's pooled allocator each job's
# gRPC keeps its own arenas of direct memory until its class loader is collected, which is a
# while after the job ends; back-to-back jobs ran the TaskManager out of direct memory (its 7th
# job, ./xinfer soak). Unpooled, a buffer's memory goes back when the buffer is released.
GRPC_UNPOOLED="org.apache.beam.vendor.grpc.v1p60p1.io.netty.allocator.type=unpooled"

# TaskManager NODE for the cluster in DIR (its conf made by flink_up), and the wait until the
# JobManager has registered it.
flink_taskmanager() {  # DIR CLASSPATH NODE
  local dir=$1 cp=$2 k=${3:-1} tm logged=0 sfx slots pool
  sfx=$([ "$k" = 1 ] || echo "-$k")
  slots=$(cut -d' ' -f2 "$dir/nodes" 2>/dev/null || echo 2)
  pool=$(( ${XINFER_FLINK_POOL_PORT:-50000} + 100 * (k - 1) ))
  mapfile -t tm < <(flink_resource_params TM "$cp" "$dir/conf")
  [ ${#tm[@]} -eq 2 ] || die "Flink's BashJavaUtils did not compute memory settings from $dir/conf/config.yaml."
  if [ -f "$dir/jobmanager.log" ]; then logged=$(wc -l < "$dir/jobmanager.log"); fi
  # shellcheck disable=SC2086
  start_daemon "taskmanager$sfx" "$dir/taskmanager$sfx.pid" "$dir/taskmanager$sfx.out" \
    env XINFER_NODE_WORKER_POOL="127.0.0.1:$pool" XINFER_NODE_WORKER_POOL_SECRET_FILE="$dir/pool$sfx.secret" \
    XINFER_NODE_SLOTS="$slots" \
    java ${tm[0]} "@$ROOT/runners-config/java17.args" -Dlog4j.configurationFile="file:$dir/conf/log4j.properties" \
    -Dlog.file="$dir/taskmanager$sfx.log" "-D$GRPC_UNPOOLED" \
    -cp "$cp" org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir "$dir/conf" ${tm[1]} \
    -D "taskmanager.numberOfTaskSlots=$slots" -D "taskmanager.resource-id=node-$k"
  local deadline=$((SECONDS + 90))
  # The REST API takes only TLS clients with the cluster's key: the JobManager's log tells instead.
  until tail -n "+$((logged + 1))" "$dir/jobmanager.log" 2>/dev/null | grep -q "Registering TaskManager"; do
    [ $SECONDS -ge $deadline ] && die "no TaskManager registered with the JobManager within 90 s; see $dir/taskmanager$sfx.log."
    sleep 1
  done
}

# Starts node k's pool and TaskManager when either is gone (both when DIR's cluster is new).
flink_node() {  # DIR CLASSPATH NODE
  local dir=$1 cp=$2 k=$3 sfx pool
  sfx=$([ "$k" = 1 ] || echo "-$k")
  pool=$(( ${XINFER_FLINK_POOL_PORT:-50000} + 100 * (k - 1) ))
  if ! cluster_pid_alive "$dir/worker-pool$sfx.pid"; then
    [ -f "$dir/worker-pool$sfx.pid" ] && note "flink: the Python worker pool of node $k is gone; starting it again on 127.0.0.1:$pool (same secret)"
    start_worker_pool "$dir" "$pool" "$([ "$k" = 1 ] || echo "$k")"
  fi
  if ! cluster_pid_alive "$dir/taskmanager$sfx.pid"; then
    [ -f "$dir/taskmanager$sfx.pid" ] && note "flink: TaskManager $k is gone; starting a new one (the JobManager and its jobs stay; a running job restarts from its last checkpoint)"
    flink_taskmanager "$dir" "$cp" "$k"
  fi
}

# The cluster's job runtime: xinfer's jar (a copy per build under DIR/lib/<hash>/, so that a
# rebuild changes what new jobs load, not what running jobs read) and the jars of NAME's
# job-runtime profile beyond the cluster's own, listed one per line in LIST for the launcher.
cluster_job_runtime() {  # NAME DIR LIST
  local name=$1 dir=$2 list=$3 own runtime jar copy
  own=$(cluster_classpath "$name") || exit $?
  runtime=$(cluster_classpath "$name" job-runtime) || exit $?
  jar=$(tr ':' '\n' <<< "$runtime" | grep '/xinfer-java-transforms-[^/]*\.jar$' | head -1)
  [ -n "$jar" ] && [ -f "$jar" ] || die "xinfer's jar is not in the $name job runtime (Maven resolves it from ~/.m2: run ./xinfer setup)."
  copy="$dir/lib/$(sha256sum "$jar" | cut -c1-16)/$(basename "$jar")"
  if [ ! -f "$copy" ]; then
    mkdir -p "$(dirname "$copy")" && cp "$jar" "$copy.tmp" && mv "$copy.tmp" "$copy"
  fi
  mkdir -p "$(dirname "$list")"
  { echo "$copy"
    tr ':' '\n' <<< "$runtime" | grep -v '/xinfer-java-transforms-[^/]*\.jar$' \
      | grep -vxF -f <(tr ':' '\n' <<< "$own")
  } > "$list.tmp"
  mv "$list.tmp" "$list"
}

flink_job_runtime() {  # DIR
  cluster_job_runtime flink "$1" "$1/client-conf/runtime-jars.txt"
}

flink_up() {  # [--taskmanagers N] [--slots S]
  local dir="$CLUSTERS/flink" rest="${XINFER_FLINK_REST_PORT:-8081}" pool="${XINFER_FLINK_POOL_PORT:-50000}"
  local nodes="" slots="" k
  while [ $# -gt 0 ]; do
    case "$1" in
      --taskmanagers) nodes="${2:?--taskmanagers needs a number}"; shift 2 ;;
      --taskmanagers=*) nodes="${1#*=}"; shift ;;
      --slots) slots="${2:?--slots needs a number}"; shift 2 ;;
      --slots=*) slots="${1#*=}"; shift ;;
      *) die "unknown flag '$1' for cluster up flink; use --taskmanagers N and --slots S." ;;
    esac
  done
  [[ "${nodes:-1}" =~ ^[1-9]$ ]] || die "--taskmanagers takes 1 to 9 (one machine), not '$nodes'."
  [[ "${slots:-2}" =~ ^[1-9][0-9]?$ ]] || die "--slots takes a positive number, not '$slots'."
  # The JobManager up, a TaskManager or a pool gone (killed, crashed): start what is gone and
  # keep the JobManager, so that its running jobs go on (they restart on the new TaskManager
  # from their last checkpoint), as an operator replaces a lost node.
  if cluster_pid_alive "$dir/jobmanager.pid" && port_open "$rest" && [ -f "$dir/conf/config.yaml" ]; then
    if [ -n "$nodes$slots" ] && [ "${nodes:-1} ${slots:-2}" != "$(cat "$dir/nodes" 2>/dev/null || echo "1 2")" ]; then
      die "flink is up with $(flink_nodes "$dir") TaskManager(s) of $(cut -d' ' -f2 "$dir/nodes" 2>/dev/null || echo 2) slots; ./xinfer cluster down flink first to start another shape."
    fi
    local tcp=""
    for k in $(seq 1 "$(flink_nodes "$dir")"); do
      local sfx; sfx=$([ "$k" = 1 ] || echo "-$k")
      if ! cluster_pid_alive "$dir/worker-pool$sfx.pid" || ! cluster_pid_alive "$dir/taskmanager$sfx.pid"; then
        [ -n "$tcp" ] || tcp=$(cluster_classpath flink) || exit $?
        flink_node "$dir" "$tcp" "$k"
      fi
    done
  fi
  # shellcheck disable=SC2046
  if cluster_is_up flink "$dir" "$rest" jobmanager $(flink_node_procs "$dir"); then
    flink_job_runtime "$dir"
    note "flink already up: REST 127.0.0.1:$rest, $(flink_nodes "$dir") TaskManager(s), Python worker pool 127.0.0.1:$pool"; return
  fi
  local ports=("$rest")
  for k in $(seq 1 "${nodes:-1}"); do ports+=($((pool + 100 * (k - 1)))); done
  cluster_ports_free "XINFER_FLINK_REST_PORT / XINFER_FLINK_POOL_PORT" "${ports[@]}"
  step "Starting a Flink $(sed -n 's:.*<flink.version>\(.*\)</flink.version>.*:\1:p' "$ROOT/pom.xml") standalone cluster (JobManager and ${nodes:-1} TaskManager JVM(s), ${slots:-2} slots each) and a Python worker pool beside each TaskManager"
  local cp; cp=$(cluster_classpath flink) || exit $?
  mkdir -p "$dir/conf" "$dir/tmp" "$dir/client-conf"
  echo "${nodes:-1} ${slots:-2}" > "$dir/nodes"
  flink_tls "$dir" || exit 2
  (umask 077
   sed -e "s#@REST_PORT@#$rest#g" "$ROOT/runners-config/clusters/flink/config.yaml" > "$dir/conf/config.yaml"
   printf 'io:\n  tmp:\n    dirs: %s\nweb.tmpdir: %s\nstate.checkpoints.dir: file://%s\n' "$dir/tmp" "$dir/tmp" "$dir/checkpoints" >> "$dir/conf/config.yaml"
   cat "$dir/tls/ssl.yaml" >> "$dir/conf/config.yaml"
   cp "$dir/tls/ssl.yaml" "$dir/client-conf/config.yaml"
   printf 'xinfer:\n  cluster:\n    runtime-jars: %s\n' "$dir/client-conf/runtime-jars.txt" >> "$dir/client-conf/config.yaml")
  flink_job_runtime "$dir"
  cp "$ROOT/runners-config/clusters/flink/log4j.properties" "$dir/conf/"
  local jm
  mapfile -t jm < <(flink_resource_params JM "$cp" "$dir/conf")
  [ ${#jm[@]} -eq 2 ] || die "Flink's BashJavaUtils did not compute memory settings from $dir/conf/config.yaml."
  # shellcheck disable=SC2086
  start_daemon jobmanager "$dir/jobmanager.pid" "$dir/jobmanager.out" \
    java ${jm[0]} "@$ROOT/runners-config/java17.args" -Dlog4j.configurationFile="file:$dir/conf/log4j.properties" \
    -Dlog.file="$dir/jobmanager.log" \
    -cp "$cp" org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint --configDir "$dir/conf" ${jm[1]}
  wait_for_port "$rest" 90 "Flink's JobManager" "$dir/jobmanager.log"
  for k in $(seq 1 "${nodes:-1}"); do flink_node "$dir" "$cp" "$k"; done
  note "flink up: --flinkMaster=127.0.0.1:$rest --flinkConfDir=$dir/client-conf (REST and web UI https://127.0.0.1:$rest, mutual TLS with $dir/tls/keystore.p12), worker pool --xinferWorkerPool=127.0.0.1:$pool --xinferWorkerPoolSecretFile=$dir/pool.secret${nodes:+ (each of the $nodes TaskManagers runs its Python stages on its own pool, from port $pool up by 100)}"
}
flink_down() {
  local dir="$CLUSTERS/flink" proc
  for proc in $(flink_node_procs "$dir"); do
    cluster_stop "$proc" "$dir/$proc.pid"
  done
  cluster_stop jobmanager "$dir/jobmanager.pid"
  rm -f "$dir/nodes"
}


# Spark's authentication for the standalone cluster: the master, the worker and its executors
# serve only applications that present the cluster's secret (DIR/auth/secret, this user's alone;
# jobs name it with --xinferSparkSecretFile), and the web UIs cannot kill applications. Made
# once; the settings go to the master and worker as a properties file, off their command lines.
spark_auth() (  # a subshell: the umask stays in it
  local auth="$1/auth"
  [ -s "$auth/spark.conf" ] && return
  umask 077
  rm -rf "$auth" && mkdir -p "$auth"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$auth/secret"
  printf 'spark.authenticate true\nspark.authenticate.secret %s\nspark.ui.killEnabled false\n' \
    "$(cat "$auth/secret")" > "$auth/spark.conf"
)

# Spark's nodes: worker k (1..N) with --cores C, its own Python worker pool on port
# POOL+100*(k-1) and own secret, and XINFER_NODE_WORKER_POOL / XINFER_NODE_SLOTS in its environment
# (its executors inherit it), so that the executors on each node run their Python stages on that
# node's pool, one SDK worker per core. Node 1's files are worker.*, worker-pool.*, pool.secret;
# node k's worker-k.*, worker-pool-k.*, pool-k.secret. $dir/nodes holds "N CORES".
spark_node_procs() {  # DIR: the pid-file names of every node's processes
  local k sfx
  for k in $(seq 1 "$(flink_nodes "$1")"); do
    sfx=$([ "$k" = 1 ] || echo "-$k")
    echo "worker$sfx worker-pool$sfx"
  done
}

spark_worker() {  # DIR CLASSPATH NODE CORES
  local dir=$1 cp=$2 k=$3 cores=$4 sfx pool port="${XINFER_SPARK_PORT:-7077}"
  sfx=$([ "$k" = 1 ] || echo "-$k")
  pool=$(( ${XINFER_SPARK_POOL_PORT:-50001} + 100 * (k - 1) ))
  start_worker_pool "$dir" "$pool" "$([ "$k" = 1 ] || echo "$k")"
  mkdir -p "$dir/work$sfx"
  start_daemon "worker$sfx" "$dir/worker$sfx.pid" "$dir/worker$sfx.log" \
    env SPARK_HOME="$dir/home" SPARK_SCALA_VERSION=2.12 SPARK_LOCAL_IP=127.0.0.1 SPARK_NO_DAEMONIZE=1 \
    XINFER_NODE_WORKER_POOL="127.0.0.1:$pool" XINFER_NODE_WORKER_POOL_SECRET_FILE="$dir/pool$sfx.secret" \
    XINFER_NODE_SLOTS="$cores" \
    java -Xmx512m -Dlog4j.configuration="file:$dir/home/conf/log4j.properties" -cp "$dir/home/conf:$cp" \
    org.apache.spark.deploy.worker.Worker "spark://127.0.0.1:$port" --host 127.0.0.1 \
    --properties-file "$dir/auth/spark.conf" \
    --webui-port "$(( ${XINFER_SPARK_WORKER_UI_PORT:-8083} + k - 1 ))" --cores "$cores" --memory 3g \
    --work-dir "$dir/work$sfx"
}

spark_up() {  # [--workers N] [--cores C]
  local dir="$CLUSTERS/spark" port="${XINFER_SPARK_PORT:-7077}" pool="${XINFER_SPARK_POOL_PORT:-50001}"
  local nodes="" cores="" k
  while [ $# -gt 0 ]; do
    case "$1" in
      --workers) nodes="${2:?--workers needs a number}"; shift 2 ;;
      --workers=*) nodes="${1#*=}"; shift ;;
      --cores) cores="${2:?--cores needs a number}"; shift 2 ;;
      --cores=*) cores="${1#*=}"; shift ;;
      *) die "unknown flag '$1' for cluster up spark; use --workers N and --cores C." ;;
    esac
  done
  [[ "${nodes:-1}" =~ ^[1-9]$ ]] || die "--workers takes 1 to 9 (one machine), not '$nodes'."
  [[ "${cores:-2}" =~ ^[1-9][0-9]?$ ]] || die "--cores takes a positive number, not '$cores'."
  # shellcheck disable=SC2046
  if cluster_is_up spark "$dir" "$port" master $(spark_node_procs "$dir"); then
    if [ -n "$nodes$cores" ] && [ "${nodes:-1} ${cores:-2}" != "$(cat "$dir/nodes" 2>/dev/null || echo "1 2")" ]; then
      die "spark is up with $(flink_nodes "$dir") worker(s) of $(cut -d' ' -f2 "$dir/nodes" 2>/dev/null || echo 2) cores; ./xinfer cluster down spark first to start another shape."
    fi
    cluster_job_runtime spark "$dir" "$dir/runtime-jars.txt"
    note "spark already up: spark://127.0.0.1:$port, $(flink_nodes "$dir") worker(s), Python worker pool 127.0.0.1:$pool"; return
  fi
  local ports=("$port")
  for k in $(seq 1 "${nodes:-1}"); do ports+=($((pool + 100 * (k - 1)))); done
  cluster_ports_free "XINFER_SPARK_PORT / XINFER_SPARK_POOL_PORT" "${ports[@]}"
  step "Starting a Spark $(sed -n 's:.*<spark.version>\(.*\)</spark.version>.*:\1:p' "$ROOT/pom.xml") standalone cluster (master and ${nodes:-1} worker JVM(s), ${cores:-2} cores each) and a Python worker pool beside each worker"
  local cp; cp=$(cluster_classpath spark) || exit $?
  # The worker starts executors from SPARK_HOME/jars: link the cluster's jars there.
  rm -rf "$dir/home" && mkdir -p "$dir/home/jars" "$dir/home/conf"
  echo "${nodes:-1} ${cores:-2}" > "$dir/nodes"
  local jar
  while IFS= read -r jar; do ln -s "$jar" "$dir/home/jars/"; done < <(tr ':' '\n' <<< "$cp")
  cp "$ROOT/runners-config/clusters/spark/log4j.properties" "$dir/home/conf/"
  spark_auth "$dir" || exit 2
  cluster_job_runtime spark "$dir" "$dir/runtime-jars.txt"
  local logged=0
  start_daemon master "$dir/master.pid" "$dir/master.log" \
    env SPARK_HOME="$dir/home" SPARK_SCALA_VERSION=2.12 SPARK_LOCAL_IP=127.0.0.1 SPARK_NO_DAEMONIZE=1 \
    java -Xmx512m -Dlog4j.configuration="file:$dir/home/conf/log4j.properties" -cp "$dir/home/conf:$cp" \
    org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port "${XINFER_SPARK_UI_PORT:-8082}" \
    --properties-file "$dir/auth/spark.conf"
  wait_for_port "$port" 90 "Spark's master" "$dir/master.log"
  logged=$(grep -c "Registering worker" "$dir/master.log" 2>/dev/null || true)
  for k in $(seq 1 "${nodes:-1}"); do spark_worker "$dir" "$cp" "$k" "${cores:-2}"; done
  local deadline=$((SECONDS + 90))
  until [ "$(grep -c "Registering worker" "$dir/master.log" 2>/dev/null || true)" -ge $((logged + ${nodes:-1})) ]; do
    [ $SECONDS -ge $deadline ] && die "not every Spark worker registered with the master within 90 s; see $dir/worker*.log."
    sleep 1
  done
  note "spark up: --sparkMaster=spark://127.0.0.1:$port --xinferSparkSecretFile=$dir/auth/secret --xinferSparkRuntimeJars=$dir/runtime-jars.txt, worker pool --xinferWorkerPool=127.0.0.1:$pool --xinferWorkerPoolSecretFile=$dir/pool.secret${nodes:+ (the executors of each of the $nodes workers run their Python stages on its own pool, from port $pool up by 100)}"
}

spark_down() {
  local dir="$CLUSTERS/spark" proc
  for proc in $(spark_node_procs "$dir"); do
    cluster_stop "$proc" "$dir/$proc.pid"
  done
  cluster_stop master "$dir/master.pid"
  rm -f "$dir/nodes"
}

# Starts Kafka for this command if it is not up, and stops it when the command ends.
with_kafka() {
  if cluster_pid_alive "$CLUSTERS/kafka/kafka.pid" && port_open "${XINFER_KAFKA_PORT:-9092}"; then
    note "using the running Kafka on 127.0.0.1:${XINFER_KAFKA_PORT:-9092}"
    return
  fi
  kafka_up
  CLEANUP+=('cluster_stop kafka "$CLUSTERS/kafka/kafka.pid"')
}

# with_cluster NAME PORT WHERE PROC... -- [SHAPE...]: starts cluster NAME (NAME_up SHAPE...) for
# this command if it is not up (cluster_is_up), and stops it when the command ends; a cluster
# already up is used and left up, if it has the SHAPE asked for (NAME_up says so, or stops).
with_cluster() {
  local name=$1 port=$2 where=$3 procs=() ; shift 3
  while [ $# -gt 0 ] && [ "$1" != -- ]; do procs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  if cluster_is_up "$name" "$CLUSTERS/$name" "$port" "${procs[@]}"; then
    [ $# -eq 0 ] || "${name}_up" "$@"
    note "using the running $where"
    return
  fi
  "${name}_up" "$@"
  CLEANUP+=("${name}_down")
}

with_spark() {  # [--workers N] [--cores C]: the shape this command needs
  local port="${XINFER_SPARK_PORT:-7077}"
  # shellcheck disable=SC2046
  with_cluster spark "$port" "Spark cluster on spark://127.0.0.1:$port" master $(spark_node_procs "$CLUSTERS/spark") -- "$@"
  # A running cluster's jobs load the xinfer just built.
  cluster_job_runtime spark "$CLUSTERS/spark" "$CLUSTERS/spark/runtime-jars.txt"
}

with_flink() {  # [--taskmanagers N] [--slots S]: the shape this command needs
  local port="${XINFER_FLINK_REST_PORT:-8081}"
  # shellcheck disable=SC2046
  with_cluster flink "$port" "Flink cluster on 127.0.0.1:$port" jobmanager $(flink_node_procs "$CLUSTERS/flink") -- "$@"
  # A running cluster's jobs load the xinfer just built.
  flink_job_runtime "$CLUSTERS/flink"
}

cluster_stop() {  # NAME PIDFILE
  local pidfile=$2
  if cluster_pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    note "$1 stopped (pid $pid)"
  else
    note "$1 is not running"
  fi
  rm -f "$pidfile" "$pidfile.start"
}

cluster() {
  local action="${1:-}" name="${2:-}"
  mkdir -p "$CLUSTERS" && chmod 700 "$CLUSTERS"
  case "$action:$name" in
    up:kafka) check_tools; kafka_up ;;
    down:kafka) cluster_stop kafka "$CLUSTERS/kafka/kafka.pid" ;;
    up:flink) check_tools; setup_python; setup_java; flink_up "${@:3}" ;;
    down:flink) flink_down ;;
    up:spark) check_tools; setup_python; spark_up "${@:3}" ;;
    down:spark) spark_down ;;
    status:*)
      local pidfile
      for pidfile in "$CLUSTERS"/*/*.pid; do
        [ -f "$pidfile" ] || continue
        if cluster_pid_alive "$pidfile"; then note "$(basename "$(dirname "$pidfile")")/$(basename "$pidfile" .pid): up (pid $(cat "$pidfile"))"
        else note "$(basename "$(dirname "$pidfile")")/$(basename "$pidfile" .pid): down"; fi
      done ;;
    *) die "usage: ./xinfer cluster up|down|status kafka|flink|spark (up flink: [--taskmanagers N] [--slots S]; up spark: [--workers N] [--cores C])" ;;
  esac
}
