#!/usr/bin/env bash
# Each start-up misconfiguration of the worker (docs/reliability.md, "Misconfiguration at start"): its exit code,
# how long it took and the last line it printed, against the standalone Batch emulator and a real Scaler scheduler.
# Usage: bash bench/misconfiguration.sh   (from the repository root, after `make .venv/.dev-installed`)
set -u
V="$(pwd)/.venv/bin"
WORK="$(mktemp -d)"
free_port() { "$V/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
EMU_PORT=$(free_port); OSS_PORT=$(free_port); SCH_PORT=$(free_port); DEAD_PORT=$(free_port)
"$V/python" -m batch_emulator --port "$EMU_PORT" --outputs "$WORK/outputs.json" > "$WORK/emulator.log" 2>&1 &
EMU=$!
"$V/scaler_object_storage_server" "tcp://127.0.0.1:$OSS_PORT" > "$WORK/storage.log" 2>&1 &
OSS=$!
"$V/scaler-batch" scheduler "tcp://127.0.0.1:$SCH_PORT" --object-storage-address "tcp://127.0.0.1:$OSS_PORT" \
    > "$WORK/scheduler.log" 2>&1 &
SCH=$!
trap 'kill $EMU $OSS $SCH 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 120); do [ -s "$WORK/outputs.json" ] && break; sleep 0.5; done
sleep 3  # the scheduler binds its port
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
base=(--scheduler "tcp://127.0.0.1:$SCH_PORT" --backend aws-batch --stack-outputs "$WORK/outputs.json"
      --endpoint-url "http://127.0.0.1:$EMU_PORT")
run() {
    local name=$1; shift
    local start end rc
    start=$(date +%s.%N)
    timeout 60 "$@" > "$WORK/$name.out" 2>&1; rc=$?
    end=$(date +%s.%N)
    printf "%-24s exit %s  %5.1f s  %s\n" "$name" "$rc" "$(echo "$end - $start" | bc)" \
        "$(grep -v '^\s*$' "$WORK/$name.out" | tail -1 | cut -c1-160)"
}
run "unreachable scheduler" "$V/scaler-batch" worker "${base[@]}" --scheduler "tcp://127.0.0.1:$DEAD_PORT"
run "missing queue" "$V/scaler-batch" worker "${base[@]}" --job-queue no-such-queue
run "missing job definition" "$V/scaler-batch" worker "${base[@]}" --job-definition no-such-definition
run "missing bucket" "$V/scaler-batch" worker "${base[@]}" --bucket no-such-bucket-4d1c
run "region mismatch" "$V/scaler-batch" worker "${base[@]}" --region eu-west-3
run "no credentials" env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
    AWS_CONFIG_FILE=/nonexistent "$V/scaler-batch" worker "${base[@]}"
