# shellcheck shell=bash
# Sourced by ./xinfer (`./xinfer bench`): throughput per approach and model, streaming latency per
# record, and DirectRunner vs. embedded Flink; approaches in pipelines/src/main/java/.../bench.
# It uses the entry script's ROOT, STATE, MODELS, PY, CLEANUP, setup and digits_pipeline, its
# step, note and die, and the clusters' with_kafka, start_daemon, wait_for_port, cluster_stop.

# Streaming latency: the Kafka digits pipeline on embedded Flink at fixed offered rates, each for
# WARMUP seconds (the JVM compiling; reported apart) then SECONDS measured; every record's
# end-to-end latency, summarized per rate into CSV. Parallelism 1: the input topic has one
# partition, so a second slot would only hold idle operators.
bench_streaming() {  # CSV WARMUP SECONDS RATE:BUNDLE_MS...
  local csv=$1 warmup=$2 seconds=$3; shift 3
  with_kafka
  "$PY" -c 'from xinfer_bench import measure; print(",".join(measure.LATENCY_COLUMNS))' > "$csv"
  local run rate bundle out
  for run in "$@"; do
    rate=${run%%:*} bundle=${run##*:}
    out="$STATE/bench-streaming/rate-$rate-bundle-$bundle/predictions"
    note "offered $rate records/s for ${warmup} s of warm-up and ${seconds} s measured, --maxBundleTimeMills=$bundle"
    # The launcher gives up on predictions after --resultTimeoutSeconds and cancels the job.
    if digits_pipeline local-flink FlinkRunner "$out" "$MODELS/digits-sklearn.onnx" \
        --streaming "--bootstrapServers=127.0.0.1:${XINFER_KAFKA_PORT:-9092}" --parallelism=1 \
        "--rate=$rate" "--records=$((rate * (warmup + seconds)))" "--warmupSeconds=$warmup" \
        "--maxBundleTimeMills=$bundle" "--resultTimeoutSeconds=$(((warmup + seconds) * 4 + 60))" \
        > "$STATE/bench-streaming.log" 2>&1; then
      "$PY" -m xinfer_bench latency --rate "$rate" --bundle-ms "$bundle" --warmup-s "$warmup" \
        "$out-latency.csv" | tee -a "$csv" | sed -u 's/^/    /'
    else
      note "the streaming run at $rate/s failed (log: $STATE/bench-streaming.log)"
    fi
  done
}


# Rows per measured run: enough that the large run's work (seconds at the approach's rate) stands
# well above the run-to-run spread of a job's start-up (about a second).
bench_rows() {  # APPROACH MODEL
  case "$2:$1" in
    identity:plain-python) echo 2000000 ;;
    identity:java-floor) echo 1000000 ;;
    identity:beam-python-flink) echo 1000000 ;;
    identity:onnxruntime-java|identity:microservice) echo 500000 ;;
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

bench() {
  case "${1:-}" in
    direct) bench_direct "${2:-5}"; return ;;
    ""|--quick) ;;
    *) die "usage: ./xinfer bench [--quick] | ./xinfer bench direct" ;;
  esac
  local quick="${1:-}" batches models approaches beam_runs=()
  setup
  local dir="$ROOT/bench/results/$(date +%Y-%m-%d)"
  mkdir -p "$dir"
  step "Preparing the benchmark models (ONNX: identity and a wide MLP, 64 float features)"
  "$PY" -m xinfer_bench prepare --out "$STATE/bench-models" | sed -u 's/^/    /'
  if [ -n "$quick" ]; then batches="256"; else batches="64 256 1024"; fi
  # java-floor: the Java pipeline with no model at all; xinfer-flink-rows: rows crossing one by
  # one (--xinferRowBlocks=false), what blocks buy.
  # xinfer-flink-p2: two Flink slots, the compute the microservice's two requests in flight get.
  approaches="java-floor onnxruntime-java microservice xinfer-flink xinfer-flink-p2 xinfer-flink-rows xinfer-spark xinfer-direct"
  local csv="$dir/results.csv"
  "$PY" -c 'import sys; from xinfer_bench import measure; print(",".join(measure.CSV_COLUMNS))' > "$csv"
  for model in identity wide-mlp; do
    local file="$STATE/bench-models/$model.onnx" rows
    for batch in $batches; do
      step "$model.onnx, batch size $batch: plain Python (the limit), then each approach"
      "$PY" -m xinfer_bench plain --csv --model "$file" --rows "$(bench_rows plain-python "$model")" \
        --batch-size "$batch" | tee -a "$csv" | sed -u 's/^/    /'
      beam_runs+=("$file $(bench_rows beam-python-flink "$model") $batch")
      for approach in $approaches; do
        local line="" attempt
        # The floor has no model: once is enough.
        [ "$approach" = java-floor ] && [ "$model" != identity ] && continue
        # Two slots matter where the model is the work.
        [ "$approach" = xinfer-flink-p2 ] && [ "$model" != wide-mlp ] && continue
        rows=$(bench_rows "$approach" "$model")
        # Each approach in a JVM of its own; a stalled job (see CONTRIBUTING.md) gets one retry.
        for attempt in 1 2; do
          line=$(XINFER_PYTHON="$PY" timeout 900 java "@$ROOT/runners-config/java17.args" \
            -cp "$ROOT/pipelines/target/classes:$(cat "$ROOT/pipelines/target/classpath.txt"):$(cat "$ROOT/pipelines/target/bench-classpath.txt")" \
            dev.xinfer.pipelines.bench.Bench "$approach" "$file" "$batch" "$rows" "$PY" \
            2>> "$STATE/bench.log" | tail -1) && [ -n "$line" ] && break
          note "$approach failed or stalled (attempt $attempt; log: $STATE/bench.log)"
          line=""
        done
        [ -n "$line" ] && echo "$line" | tee -a "$csv" | sed -u 's/^/    /'
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
    line=$(timeout 900 "$PY" -m xinfer_bench beam --csv --model "$file" --rows "$rows" --batch-size "$batch" \
      --job-endpoint "$BEAM_JOB_ENDPOINT" --job-server-pid "$(cat "$STATE/beam-job-server/job-server.pid")" \
      2>> "$STATE/bench.log" | tail -1) && [ -n "$line" ] \
      && echo "$line" | tee -a "$csv" | sed -u 's/^/    /' \
      || note "beam-python-flink failed on $(basename "$file"), batch $batch (log: $STATE/bench.log)"
  done
  step "Streaming: the Kafka digits pipeline on embedded Flink at fixed offered rates, latency per record"
  if [ -n "$quick" ]; then
    # Beam's default bundles first: the first runs after Kafka starts measured the worst tails.
    bench_streaming "$dir/latency.csv" 10 15 1000:1000 1000:10 1000:5 2000:10
  else
    bench_streaming "$dir/latency.csv" 15 30 1000:1000 250:10 500:10 1000:5 1000:10 2000:10 1000:50
  fi
  "$PY" -m xinfer_bench report "$csv" "$dir/latency.csv" > "$dir/results.md"
  "$PY" -m xinfer_bench plot "$csv" "$dir/latency.csv" | sed -u 's/^/    /'
  step "Results ($dir): rows/s, and the ratio to plain Python for the same model and batch size"
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
