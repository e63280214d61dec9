#!/usr/bin/env bash
# Load figures for BENCHMARKS.md (issue 8), each printed beside its in-run baseline.
#
#   scripts/load.sh                      # from anywhere; builds, measures, cleans up
#   CARGO_TARGET_DIR=/path scripts/load.sh
#
# Needs: cargo, curl, jq, python3 and wrk (Debian: `apt-get install -y wrk jq`).
# Every request goes to a quantd started by this script on a free 127.0.0.1 port with a fresh
# temporary data dir; nothing else is contacted. Each wrk scenario gets a short warm-up and a
# bounded measured run. Settings stay at their defaults (so the inference scenario runs under
# QUANTD_MAX_INFLIGHT_INFERENCES=64, and any 429s show up as non-2xx).
#
# Knobs (environment): LOAD_DURATION (wrk seconds, default 10), LOAD_WARMUP (default 2),
# LOAD_THREADS (wrk threads, default nproc), LOAD_UPLOADS (parallel uploads, default 20),
# LOAD_UPLOAD_MB (size of each, default 100), LOAD_LIST_MODELS (models for the listing
# scenario, default 21), QUANTD_FIXTURES (default <repo>/../shared/fixtures), LOAD_KEEP=1
# (keep the temp dir and server log).
#
# Works on code with and without the data-dir lock and the QUANTD_MIN_FREE_BYTES reserve:
# the data dir is new each run, and the script checks that the disk has room for the
# uploads plus the default 256 MiB reserve before it starts.
set -Eeuo pipefail

DURATION=${LOAD_DURATION:-10}
WARMUP=${LOAD_WARMUP:-2}
THREADS=${LOAD_THREADS:-$(nproc)}
N_UPLOADS=${LOAD_UPLOADS:-20}
UPLOAD_MB=${LOAD_UPLOAD_MB:-100}
N_LIST=${LOAD_LIST_MODELS:-21}

die() { echo "load.sh: FAILED: $*" >&2; exit 1; }
log() { echo "[load.sh $(date +%H:%M:%S)] $*" >&2; }
trap 'rc=$?; echo "load.sh: FAILED at line $LINENO (exit $rc): $BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=${QUANTD_FIXTURES:-$ROOT/../shared/fixtures}
DIGITS=$FIXTURES/digits/digits_mlp_fp32.safetensors
COMMAND="${CARGO_TARGET_DIR:+CARGO_TARGET_DIR=$CARGO_TARGET_DIR }scripts/load.sh"

for tool in cargo curl jq python3 wrk; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (wrk, jq: apt-get install -y wrk jq)"
done
[[ -f $DIGITS ]] || die "fixture $DIGITS not found (set QUANTD_FIXTURES)"

# 1,000 connections need as many descriptors in wrk and in the server (it inherits this).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[[ $(ulimit -n) == unlimited || $(ulimit -n) -ge 2100 ]] \
    || die "open-file limit $(ulimit -n) is too low for 1000 connections (raise the hard limit)"

# --- build -------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
log "cargo build --release (target dir $TARGET_DIR)"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release"
BIN=$TARGET_DIR/release/quantd
[[ -x $BIN ]] || die "no binary at $BIN"

# --- start the server --------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/quantd-load.XXXXXX")
DATA=$WORK/data
mkdir -p "$DATA"
SERVER_PID=
cleanup() {
    local rc=$?
    trap - ERR
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -f $WORK/server.log ]]; then
        echo "--- last lines of the server log ---" >&2
        tail -n 30 "$WORK/server.log" >&2 || true
    fi
    if [[ ${LOAD_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Room for the uploads (each stored once per upload) plus the server's free-space reserve
# (QUANTD_MIN_FREE_BYTES, 256 MiB by default on code that has it) plus the cp baselines.
need_mb=$(( (N_UPLOADS * 2 + 4) * UPLOAD_MB + 512 ))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
(( avail_mb > need_mb )) || die "$WORK has ${avail_mb} MB free; the run needs about ${need_mb} MB"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
log "starting $BIN on $BASE (data dir $DATA)"
QUANTD_BIND=127.0.0.1:$PORT QUANTD_DATA_DIR=$DATA QUANTD_LOG_FORMAT=text RUST_LOG=${RUST_LOG:-warn} \
    "$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during start-up"
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz" || true) == 200 ]] && break
    (( i < 300 )) || die "the server was not ready after 30 s"
    sleep 0.1
done
log "ready (pid $SERVER_PID)"
alive() { kill -0 "$SERVER_PID" 2>/dev/null || die "the server died (see its log above)"; }

# --- machine -----------------------------------------------------------------------------
CPU=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
ISA=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512.*|fma)$' | sort -u | tr '\n' ' ')
CORES=$(nproc)
MEM=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (+ local changes)" || true)
KERNEL_ISA=$(curl -sS "$BASE/api/v1/info" | jq -r '.kernel_isa // "?"' 2>/dev/null || echo "?")
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# --- helpers -----------------------------------------------------------------------------
upload() { # file name -> model id
    local out
    out=$(curl -sS --fail-with-body -T "$1" "$BASE/api/v1/models?name=$2") || die "upload of $2: $out"
    jq -er .id <<<"$out" || die "upload of $2 gave no id: $out"
}

# run_wrk KEY CONNECTIONS URL [LUA]: warm-up, then the measured run; writes KEY.{out,json}.
run_wrk() {
    local key=$1 conns=$2 url=$3 lua=${4:-} threads=$THREADS
    (( threads > conns )) && threads=$conns
    local args=(-t"$threads" -c"$conns" --latency --timeout 10s)
    [[ -n $lua ]] && args+=(-s "$lua")
    alive
    local la; la=$(loadavg)
    log "$key: wrk ${args[*]} -d${DURATION}s $url (load avg before: $la)"
    wrk "${args[@]}" -d"${WARMUP}s" "$url" >/dev/null || die "wrk warm-up for $key"
    wrk "${args[@]}" -d"${DURATION}s" "$url" >"$WORK/$key.out" || die "wrk for $key"
    alive
    cat "$WORK/$key.out" >&2
    python3 - "$WORK/$key.out" "$conns" "$la" >"$WORK/$key.json" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
def num(pattern, default=0.0):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else default
def ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
lat = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)\b", text)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", text)
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s|m)\b", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
done = re.search(r"(\d+) requests in", text)
print(json.dumps({
    "conns": int(sys.argv[2]),
    "rps": num(r"Requests/sec:\s+([\d.]+)"),
    "requests": int(done.group(1)) if done else 0,
    "avg_ms": ms(*lat.groups()) if lat else None,
    "p50_ms": ms(*p50.groups()) if p50 else None,
    "p99_ms": ms(*p99.groups()) if p99 else None,
    "non2xx": int(num(r"Non-2xx or 3xx responses:\s+(\d+)")),
    "socket_errors": sum(map(int, sock.groups())) if sock else 0,
    "socket_detail": "connect {} / read {} / write {} / timeout {}".format(*sock.groups()) if sock else "",
    "loadavg": sys.argv[3],
}))
EOF
}

# --- data --------------------------------------------------------------------------------
log "uploading the digits MLP and $((N_LIST - 1)) more models (listing scenario: $N_LIST models)"
MODEL=$(upload "$DIGITS" digits)
for i in $(seq 2 "$N_LIST"); do upload "$DIGITS" "list-$i" >/dev/null; done
listed=$(curl -sS --fail-with-body "$BASE/api/v1/models" | jq -e '.items | length') \
    || die "GET /api/v1/models did not answer a list"
[[ $listed == "$N_LIST" ]] || die "GET /api/v1/models lists $listed models, expected $N_LIST"
[[ $(curl -sS --fail-with-body "$BASE/api/v1/models?limit=1" | jq -e '.items | length') == 1 ]] \
    || die "GET /api/v1/models?limit=1 did not list exactly one model"

echo '{"model_type": "mlp", "layers": [{"name": "fc1", "activation": "relu"}, {"name": "fc2", "activation": "relu"}, {"name": "fc3", "activation": "identity"}]}' \
    | curl -sS --fail-with-body -T - "$BASE/api/v1/models/$MODEL/files/config.json" >/dev/null \
    || die "attaching config.json"
BODY=$(python3 -c 'import json; print(json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [round(0.1 * (i % 16), 1) for i in range(64)]}]}))')
INFER_URL=$BASE/v2/models/$MODEL/infer
shape=$(curl -sS --fail-with-body "$INFER_URL" -H 'content-type: application/json' -d "$BODY" | jq -ce '.outputs[0].shape') \
    || die "inference on the digits MLP failed"
[[ $shape == "[1,10]" ]] || die "inference answered shape $shape, expected [1,10]"
python3 - "$BODY" >"$WORK/infer.lua" <<'EOF'
import json, sys
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print("wrk.body = " + json.dumps(sys.argv[1]))
EOF

# --- scenarios ---------------------------------------------------------------------------
run_wrk healthz 1000 "$BASE/healthz"
run_wrk list_default 64 "$BASE/api/v1/models"
run_wrk list_limit1 64 "$BASE/api/v1/models?limit=1"
run_wrk infer_64 64 "$INFER_URL" "$WORK/infer.lua"
run_wrk infer_1 1 "$INFER_URL" "$WORK/infer.lua"
# What one lone request spends where (the server's own Server-Timing header), after a few.
for _ in 1 2 3 4; do curl -sS -o /dev/null "$INFER_URL" -H 'content-type: application/json' -d "$BODY"; done
LONE_TIMING=$(curl -sS -D - -o /dev/null "$INFER_URL" -H 'content-type: application/json' -d "$BODY" \
    | tr -d '\r' | grep -i '^server-timing:' | sed 's/^[^:]*: *//' || true)

# --- uploads -----------------------------------------------------------------------------
BIG=$WORK/big.safetensors
python3 - "$BIG" "$UPLOAD_MB" <<'EOF'
import json, struct, sys
path, mb = sys.argv[1], int(sys.argv[2])
n = mb * 1_000_000 // 4                      # one F32 tensor of `mb` MB (10^6 bytes)
rows = 1000
n -= n % rows
header = json.dumps({"weight": {"dtype": "F32", "shape": [rows, n // rows], "data_offsets": [0, 4 * n]}}).encode()
header += b" " * (-len(header) % 8)
chunk = struct.pack("<1000f", *[((i * 37) % 201 - 100) / 100.0 for i in range(1000)]) * 250  # 1 MB of finite values
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header)
    left = 4 * n
    while left:
        f.write(chunk[:left]); left -= min(left, len(chunk))
EOF
BIG_BYTES=$(stat -c %s "$BIG")
cat "$BIG" >/dev/null   # in the page cache for the baselines and curl alike

mbps() { python3 -c "import sys; print(f'{$1 / 1e6 / $2:.0f}')"; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

la_upload_baseline=$(loadavg)
log "baselines: cp / dd of the ${BIG_BYTES}-byte file into $WORK (same disk as the data dir; load avg $la_upload_baseline)"
sync
t0=$(now); cp "$BIG" "$WORK/cp1"; t1=$(now)
cp_s=$(elapsed "$t0" "$t1"); rm -f "$WORK/cp1"
t0=$(now); dd if="$BIG" of="$WORK/dd1" bs=4M conv=fsync status=none; t1=$(now)
dd_s=$(elapsed "$t0" "$t1"); rm -f "$WORK/dd1"
sync
t0=$(now)
cp_pids=()
for i in $(seq "$N_UPLOADS"); do cp "$BIG" "$WORK/cpp$i" & cp_pids+=($!); done
for p in "${cp_pids[@]}"; do wait "$p" || die "a parallel cp failed"; done
t1=$(now)
cpp_s=$(elapsed "$t0" "$t1"); rm -f "$WORK"/cpp*
sync

alive
rss_before_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
hwm_before_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
# Reset the peak (VmHWM) to the current RSS, so the peak below is the uploads' own.
hwm_reset=no
echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null && hwm_reset=yes
(
    peak=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [[ ! -f $WORK/uploads.done ]]; do
        r=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
        (( r > peak )) && peak=$r && echo "$peak" >"$WORK/rss.peak"
        sleep 0.02
    done
) &
SAMPLER=$!
la_upload=$(loadavg)
log "uploads: $N_UPLOADS parallel curl -T of $BIG_BYTES bytes (load avg before: $la_upload)"
t0=$(now)
pids=()
for i in $(seq "$N_UPLOADS"); do
    curl -sS -o "$WORK/up$i.json" -w '%{http_code}' -T "$BIG" "$BASE/api/v1/models?name=big-$i" >"$WORK/up$i.code" 2>"$WORK/up$i.err" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
t1=$(now)
touch "$WORK/uploads.done"; wait "$SAMPLER" || true
alive
up_s=$(elapsed "$t0" "$t1")
up_ok=0
for i in $(seq "$N_UPLOADS"); do
    code=$(cat "$WORK/up$i.code" 2>/dev/null || true)
    if [[ $code == 201 ]]; then up_ok=$((up_ok + 1)); else
        log "upload $i answered '${code}': $(head -c 300 "$WORK/up$i.json" 2>/dev/null) $(cat "$WORK/up$i.err")"
    fi
done
hwm_after_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
rss_after_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
rss_peak_kb=$(cat "$WORK/rss.peak" 2>/dev/null || echo "$rss_before_kb")
(( up_ok == N_UPLOADS )) || die "$((N_UPLOADS - up_ok)) of $N_UPLOADS uploads failed"

# --- report ------------------------------------------------------------------------------
j() { jq -r "$2" "$WORK/$1.json"; }
fmt_row() { # key label baseline
    local k=$1
    printf '| %s | %s | %s | %s / %s / %s | %s | %s | %s | %s |\n' "$2" "$(j "$k" .conns)" \
        "$(j "$k" '.rps | floor')" "$(j "$k" '.avg_ms | . * 100 | round / 100')" \
        "$(j "$k" '.p50_ms | . * 100 | round / 100')" "$(j "$k" '.p99_ms | . * 100 | round / 100')" \
        "$(j "$k" .non2xx)" "$(j "$k" '.socket_errors')$( [[ $(j "$k" .socket_errors) != 0 ]] && echo " ($(j "$k" .socket_detail))")" \
        "$(j "$k" .loadavg)" "$3"
}
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

cat <<EOF

## Load figures — quantd $COMMIT$DIRTY, $(date -u +%Y-%m-%d)

Machine: $CPU, $CORES cores ($(nproc --all) online), $MEM; ISA flags: $ISA; kernels in use: $KERNEL_ISA.
wrk and the server share these cores (loopback); wrk -t$THREADS, ${WARMUP} s warm-up then ${DURATION} s measured per row.
Command: \`$COMMAND\`

| scenario | connections | requests/s | latency avg / p50 / p99 (ms) | non-2xx | socket errors | load avg before (1/5/15 min) | baseline in the same run |
|---|---:|---:|---|---:|---:|---|---|
$(fmt_row healthz 'GET /healthz' "machine only: $CORES cores")
$(fmt_row list_default "GET /api/v1/models ($N_LIST models, default limit)" "limit=1: $(j list_limit1 '.rps | floor') req/s ($(python3 -c "print(f'{$(j list_default .rps) / $(j list_limit1 .rps):.2f}')")x of it)")
$(fmt_row list_limit1 'GET /api/v1/models?limit=1' '(the baseline of the row above)')
$(fmt_row infer_64 'POST /v2/models/{digits MLP}/infer, FP32 [1,64]' "1 connection: $(j infer_1 '.rps | floor') req/s")
$(fmt_row infer_1 'POST /v2/models/{digits MLP}/infer, 1 connection' '(the baseline of the row above)')

| uploads | result | baseline in the same run |
|---|---|---|
| $N_UPLOADS parallel \`curl -T\` of a ${BIG_BYTES}-byte safetensors file (one F32 tensor) | $up_ok/$N_UPLOADS stored (201) in ${up_s} s: **$(mbps "$N_UPLOADS * $BIG_BYTES" "$up_s") MB/s** aggregate | one \`cp\` of the file: $(mbps "$BIG_BYTES" "$cp_s") MB/s; \`dd conv=fsync\`: $(mbps "$BIG_BYTES" "$dd_s") MB/s; $N_UPLOADS parallel \`cp\`: $(mbps "$N_UPLOADS * $BIG_BYTES" "$cpp_s") MB/s aggregate (load avg before baselines: $la_upload_baseline) |
| server memory during the uploads | peak RSS **$(mb "$hwm_after_kb") MiB** (VmHWM$( [[ $hwm_reset == yes ]] && echo ", reset just before the uploads" || echo " over the whole run: clear_refs not writable")); sampled VmRSS peak $(mb "$rss_peak_kb") MiB | RSS before the uploads: $(mb "$rss_before_kb") MiB (VmHWM of the run until then: $(mb "$hwm_before_kb") MiB); after: $(mb "$rss_after_kb") MiB |
| load avg before the uploads | $la_upload | |

Server-Timing of one lone inference request (after the runs): \`${LONE_TIMING:-none}\`.

MB = 10^6 bytes. Disk: $(df -P "$WORK" | awk 'NR==2 {print $1}') (data dir and baselines both under $(dirname "$WORK")).
EOF
