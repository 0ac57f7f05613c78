# shellcheck shell=bash
# Sourced by ./xinfer (`./xinfer bench`): throughput per approach and model, streaming latency per
# record, and DirectRunner vs. embedded Flink; approaches in pipelines/src/main/java/.../bench.
# It uses the entry script's ROOT, STATE, MODELS, PY, CLEANUP, setup and digits_pipeline, its
# step, note and die, and the clusters' with_kafka, start_daemon, wait_for_port, cluster_stop.

# Streaming latency: the Kafka digits pipeline on embedded Flink at an offered rate, WARMUP seconds
# (the JVM compiling; the launcher ramps the rate from a tenth of it to all of it; reported apart)
# then SECONDS measured at the rate; every record's end-to-end latency,
# summarized into a line of the latency CSV. Succeeds when the run sustained the rate: the examples
# went out at it, every one came back, p99 under 1 s (xinfer_bench.measure.latency_line).
# Parallelism 1: the input topic has one partition, so a second slot would only hold idle operators.
# At least once (--exactlyOnce=false): written exactly once, a prediction reaches a read_committed
# reader only with the checkpoint after it (Flink holds a @RequiresStableInput stage's input until
# then), so the latency would be the checkpoint interval's (1 s), not the pipeline's.
bench_streaming_run() {  # CSV WARMUP SECONDS RATE BUNDLE_MS
  local csv=$1 warmup=$2 seconds=$3 rate=$4 bundle=$5
  # The ramp sends (1/10 + 1) / 2 of the rate over the warm-up.
  local records=$((rate * (warmup * 11 / 20 + seconds))) line
  local out="$STATE/bench-streaming/rate-$rate-bundle-$bundle/predictions"
  note "offered $rate records/s for ${warmup} s of warm-up and ${seconds} s measured, --maxBundleTimeMills=$bundle"
  # The launcher gives up on predictions --resultTimeoutSeconds after the job's start (start-up
  # and sending included) and cancels the job; records not back by then are missing, and the run
  # did not sustain its rate.
  if ! digits_pipeline local-flink FlinkRunner "$out" "$MODELS/digits-sklearn.onnx" \
      --streaming "--bootstrapServers=127.0.0.1:${XINFER_KAFKA_PORT:-9092}" --parallelism=1 \
      "--rate=$rate" "--records=$records" "--warmupSeconds=$warmup" \
      "--maxBundleTimeMills=$bundle" "--resultTimeoutSeconds=$((warmup + seconds + 120))" \
      --exactlyOnce=false > "$STATE/bench-streaming.log" 2>&1; then
    note "the streaming run at $rate/s failed (log: $STATE/bench-streaming.log)"
    return 1
  fi
  if ! line=$("$PY" -m xinfer_bench latency --rate "$rate" --bundle-ms "$bundle" \
      --warmup-s "$warmup" --records "$records" "$out-latency.csv"); then
    note "the streaming run at $rate/s gave no latency (log: $STATE/bench-streaming.log)"
    return 1
  fi
  echo "$line" | tee -a "$csv" | sed -u 's/^/    /'
  [ "$(echo "$line" | cut -d, -f"$(latency_column sustained)")" = yes ]
}

# The position (from 1) of a column of the latency CSV: NAME.
latency_column() {
  "$PY" -c 'import sys; from xinfer_bench import measure; print(measure.LATENCY_COLUMNS.index(sys.argv[1]) + 1)' "$1"
}

# Streaming runs at fixed RATE:BUNDLE_MS, each reported whether or not it sustained its rate.
bench_streaming() {  # CSV WARMUP SECONDS RATE:BUNDLE_MS...
  local csv=$1 warmup=$2 seconds=$3 run; shift 3
  for run in "$@"; do
    bench_streaming_run "$csv" "$warmup" "$seconds" "${run%%:*}" "${run##*:}" || true
  done
}

# The highest rate the pipeline sustains, with xinfer's default 100 ms bundles: RATEs in increasing
# order, up to the first one not sustained.
# Warm-up of the sweep's runs: a fresh JVM runs the job's code slowly until the JIT has compiled it
# (C2 took half a core), and on 2 cores the job's capacity kept rising for about a minute (at
# 20,000 records/s from the start it fell 10 s or more behind and never drained that). The
# launcher ramps the rate up over the warm-up, so that the measured records go out at the rate to
# a warm job rather than behind the warm-up's backlog. Their warm-up p99 is reported too.
SWEEP_WARMUP=60
bench_streaming_sweep() {  # CSV WARMUP SECONDS RATE...
  local csv=$1 warmup=$2 seconds=$3 rate; shift 3
  for rate in "$@"; do
    bench_streaming_run "$csv" "$warmup" "$seconds" "$rate" 100 || break
  done
}


# Rows per measured run: enough that the large run's work (seconds at the approach's rate) stands
# well above the run-to-run spread of a job's start-up (about a second).
bench_rows() {  # APPROACH MODEL
  case "$2:$1" in
    identity:plain-python) echo 2000000 ;;
    identity:java-floor-flink|identity:java-floor-spark) echo 1000000 ;;
    # The DirectRunner makes about 2,000 rows/s with no model at all.
    identity:java-floor-direct) echo 50000 ;;
    identity:beam-python-flink) echo 1000000 ;;
    identity:onnxruntime-java|identity:microservice) echo 500000 ;;
    # Since rows cross without RowCoder (2026-12-06) xinfer runs 200,000-250,000 rows/s here:
    # 100,000 rows took 0.3 s more than 20,000, and the three runs spread 2x.
    identity:xinfer-flink|identity:xinfer-spark) echo 1000000 ;;
    identity:*) echo 100000 ;;
    *:beam-python-flink) echo 100000 ;;
    *) echo 40000 ;;
  esac
}

# Beam's Flink job server (embedded Flink, every server on 127.0.0.1, free ports) for the
# benchmark's pure-Python pipeline; stopped when the command ends. Sets BEAM_JOB_ENDPOINT.
beam_job_server_up() {
  local dir="$STATE/beam-job-server" ports
  mkdir -p "$dir"
  read -r -a ports < <("$PY" -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
  start_daemon "Beam Flink job server" "$dir/job-server.pid" "$dir/job-server.log" \
    java "@$ROOT/runners-config/java17.args" -Dorg.slf4j.simpleLogger.log.org.apache.beam.runners.jobsubmission=info \
    -cp "$ROOT/pipelines/target/classes:$(cat "$ROOT/pipelines/target/classpath.txt")" \
    dev.xinfer.pipelines.bench.LoopbackFlinkJobServer --flink-master=[local] --job-host=127.0.0.1 \
    --job-port="${ports[0]}" --artifact-port="${ports[1]}" --expansion-port="${ports[2]}" \
    --artifacts-dir="$dir/artifacts"
  CLEANUP+=('cluster_stop "Beam Flink job server" "$STATE/beam-job-server/job-server.pid"')
  wait_for_port "${ports[0]}" 90 "Beam Flink job server" "$dir/job-server.log"
  BEAM_JOB_ENDPOINT="127.0.0.1:${ports[0]}"
  note "job server up: $BEAM_JOB_ENDPOINT"
}

# The streaming part alone: the sweep at RATEs (records/s, 100 ms bundles), up to the first not
# sustained; the latency CSV in bench/results/DATE/latency-streaming.csv.
bench_streaming_only() {  # RATE...
  setup
  local dir="$ROOT/bench/results/$(date +%Y-%m-%d)"
  mkdir -p "$dir"
  local csv="$dir/latency-streaming.csv"
  "$PY" -c 'from xinfer_bench import measure; print(",".join(measure.LATENCY_COLUMNS))' > "$csv"
  with_kafka
  step "Streaming: the Kafka digits pipeline on embedded Flink at ${*:-1000 5000 10000 20000 25000 30000} records/s"
  # shellcheck disable=SC2046
  bench_streaming_sweep "$csv" "$SWEEP_WARMUP" 15 ${*:-1000 5000 10000 20000 25000 30000} || true
}

bench() {
  case "${1:-}" in
    direct) bench_direct "${2:-5}"; return ;;
    streaming) shift; bench_streaming_only "$@"; return ;;
    ""|--quick) ;;
    *) die "usage: ./xinfer bench [--quick] | ./xinfer bench direct | ./xinfer bench streaming [RATE...]" ;;
  esac
  local quick="${1:-}" batches models approaches beam_runs=()
  setup
  local dir="$ROOT/bench/results/$(date +%Y-%m-%d)"
  mkdir -p "$dir"
  step "Preparing the benchmark models (ONNX: identity and a wide MLP, 64 float features)"
  "$PY" -m xinfer_bench prepare --out "$STATE/bench-models" | sed -u 's/^/    /'
  if [ -n "$quick" ]; then batches="256"; else batches="64 256 1024"; fi
  # java-floor-*: the Java pipeline with no model at all, on each runner an approach runs on
  # (every Flink approach on the portable Flink runner, as xinfer); xinfer-flink-rows: rows
  # crossing one by one (--xinferRowBlocks=false), what blocks buy.
  # xinfer-flink-p2: two Flink slots, the compute the microservice's two requests in flight get.
  # Approaches joined by commas are measured together, interleaved in one JVM (see Bench; plain
  # Python in a process of its own each round): each target's ratio (xinfer to the floor on its
  # runner and to the microservice; on the wide MLP to plain Python) then compares measurements
  # taken in the same minutes, on a machine whose speed drifts.
  local -A approaches=(
    [identity]="java-floor-flink,xinfer-flink,microservice onnxruntime-java xinfer-flink-rows java-floor-spark,xinfer-spark java-floor-direct,xinfer-direct"
    [wide-mlp]="plain-python,xinfer-flink,xinfer-spark microservice onnxruntime-java xinfer-flink-p2 xinfer-flink-rows xinfer-direct"
  )
  local csv="$dir/results.csv"
  "$PY" -c 'import sys; from xinfer_bench import measure; print(",".join(measure.CSV_COLUMNS))' > "$csv"
  for model in identity wide-mlp; do
    local file="$STATE/bench-models/$model.onnx" group rows lines
    for batch in $batches; do
      step "$model.onnx, batch size $batch: plain Python (the limit) and each approach"
      # Plain Python alone, unless a group measures it with the approaches compared to it.
      case " ${approaches[$model]//,/ } " in
        *" plain-python "*) ;;
        *) "$PY" -m xinfer_bench plain --csv --model "$file" --rows "$(bench_rows plain-python "$model")" \
             --batch-size "$batch" | tee -a "$csv" | sed -u 's/^/    /' ;;
      esac
      beam_runs+=("$file $(bench_rows beam-python-flink "$model") $batch")
      for group in ${approaches[$model]}; do
        local members attempt approach
        IFS=, read -r -a members <<< "$group"
        rows=""
        for approach in "${members[@]}"; do rows+="${rows:+,}$(bench_rows "$approach" "$model")"; done
        # A JVM per group (a warm-up each, then 3 measurements each: a line per approach with
        # their median, min and max); a stalled job (see CONTRIBUTING.md) gets one retry.
        for attempt in 1 2; do
          lines=$(XINFER_PYTHON="$PY" timeout $((1800 * ${#members[@]})) java "@$ROOT/runners-config/java17.args" \
            -cp "$ROOT/pipelines/target/classes:$(cat "$ROOT/pipelines/target/classpath.txt"):$(cat "$ROOT/pipelines/target/bench-classpath.txt")" \
            dev.xinfer.pipelines.bench.Bench "$group" "$file" "$batch" "$rows" "$PY" \
            2>> "$STATE/bench.log" | tail -"${#members[@]}") && [ -n "$lines" ] && break
          note "$group failed or stalled (attempt $attempt; log: $STATE/bench.log)"
          lines=""
        done
        [ -n "$lines" ] && echo "$lines" | tee -a "$csv" | sed -u 's/^/    /'
      done
    done
  done
  step "Beam's own RunInference in a pure-Python pipeline on Beam's Flink job server (beam-python-flink)"
  beam_job_server_up
  # A new job server runs its first few jobs slower (JIT): a throwaway measurement warms it up.
  read -r file rows batch <<< "${beam_runs[0]}"
  timeout 900 "$PY" -m xinfer_bench beam --model "$file" --rows 5000 --batch-size "$batch" \
    --job-endpoint "$BEAM_JOB_ENDPOINT" > /dev/null 2>> "$STATE/bench.log" || true
  local run line
  for run in "${beam_runs[@]}"; do
    read -r file rows batch <<< "$run"
    line=$(timeout 1800 "$PY" -m xinfer_bench beam --csv --model "$file" --rows "$rows" --batch-size "$batch" \
      --job-endpoint "$BEAM_JOB_ENDPOINT" --job-server-pid "$(cat "$STATE/beam-job-server/job-server.pid")" \
      2>> "$STATE/bench.log" | tail -1) && [ -n "$line" ] \
      && echo "$line" | tee -a "$csv" | sed -u 's/^/    /' \
      || note "beam-python-flink failed on $(basename "$file"), batch $batch (log: $STATE/bench.log)"
  done
  # The throughput ratios into results.csv now (its second section; nothing is appended to it
  # after this), should the streaming part fail; printed with the streaming figures below.
  "$PY" -m xinfer_bench checks "$csv" > /dev/null
  step "Streaming: the Kafka digits pipeline on embedded Flink at fixed offered rates, latency per record; then rates up to the highest sustained"
  with_kafka
  local latency="$dir/latency.csv"
  "$PY" -c 'from xinfer_bench import measure; print(",".join(measure.LATENCY_COLUMNS))' > "$latency"
  if [ -n "$quick" ]; then
    # Beam's default bundles first: the first runs after Kafka starts measured the worst tails.
    bench_streaming "$latency" 30 15 1000:1000 1000:100 1000:10 2000:100
    bench_streaming_sweep "$latency" "$SWEEP_WARMUP" 15 5000 10000 20000 25000 30000 40000
  else
    bench_streaming "$latency" 30 30 1000:1000 250:100 500:100 1000:10 1000:100 2000:100 1000:50
    bench_streaming_sweep "$latency" "$SWEEP_WARMUP" 30 5000 10000 15000 20000 25000 30000 40000 60000
  fi
  step "The figures the targets are about (issue 16; also in results.csv, its second section)"
  "$PY" -m xinfer_bench checks "$csv" "$latency"
  "$PY" -m xinfer_bench report "$csv" "$latency" > "$dir/results.md"
  "$PY" -m xinfer_bench plot "$csv" "$latency" | sed -u 's/^/    /'
  step "Results ($dir): rows/s (median of 3, min-max) per runner, and the ratio to plain Python for the same model and batch size"
  sed 's/^/    /' "$dir/results.md"
}

bench_direct() {
  setup
  step "Benchmark: the same 100-record RunInference pipeline on DirectRunner and embedded Flink"
  XINFER_PYTHON="$PY" java "@$ROOT/runners-config/java17.args" \
    -cp "$ROOT/pipelines/target/classes:$(cat "$ROOT/pipelines/target/classpath.txt")" \
    dev.xinfer.pipelines.bench.DirectVsFlink "$MODELS/digits.csv" "$MODELS/digits-mlp" "$1" \
    2> "$STATE/bench-direct.log"
}
