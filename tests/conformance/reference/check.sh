#!/usr/bin/env bash
# Builds the Go reference interpreter (reference/gointerp) and checks that it
# prints every golden of the corpus byte for byte.
#
#   tests/conformance/reference/check.sh [--runs N] [--update] [SCRIPT...]
#
# With no SCRIPT, every tests/conformance/*.script is checked. Each script is
# run N times (default 3, at the same time); every run must exit 0 and print
# the same transcript, and that transcript must equal NAME.golden. A run that
# exits 3 (late: the machine was too busy) is repeated, up to 4 tries.
# --update writes NAME.golden from the agreed transcript instead of comparing
# (for a new script, or after a deliberate change of the script language).
#
# Needs a Go toolchain: $GO, or `go` on PATH. Nothing is downloaded: the
# interpreter uses the standard library only. The binary goes to $GOINTERP_OUT
# (default ${TMPDIR:-/tmp}/tether-gointerp).
# Exit status: 0 all good; 1 some script differs, disagrees with itself or fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
corpus=$(dirname "$here")
runs=3
update=0
scripts=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --update) update=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) scripts+=("$1"); shift ;;
  esac
done
if [ ${#scripts[@]} -eq 0 ]; then
  scripts=("$corpus"/*.script)
fi

go=${GO:-$(command -v go || true)}
[ -n "$go" ] || { echo "check.sh: no Go toolchain (set GO=/path/to/go)" >&2; exit 1; }
bin=${GOINTERP_OUT:-${TMPDIR:-/tmp}/tether-gointerp}
export GOCACHE=${GOCACHE:-${TMPDIR:-/tmp}/gocache} GOFLAGS=${GOFLAGS:--mod=mod} GOTOOLCHAIN=local
(cd "$here/gointerp" && "$go" vet . && "$go" build -o "$bin" .)
echo "built $bin ($("$go" version))"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# one_run SCRIPT OUT: runs the interpreter, repeating late runs; prints the exit status.
one_run() {
  local rc
  for _ in 1 2 3 4; do
    rc=0
    "$bin" < "$1" > "$2" 2> "$2.err" || rc=$?
    [ "$rc" -eq 3 ] || break
  done
  echo "$rc" > "$2.rc"
}

good=0
total=0
for script in "${scripts[@]}"; do
  name=$(basename "$script" .script)
  golden="${script%.script}.golden"
  total=$((total + 1))
  for i in $(seq 1 "$runs"); do one_run "$script" "$work/$name.$i" & done
  wait
  problem=""
  for i in $(seq 1 "$runs"); do
    rc=$(cat "$work/$name.$i.rc")
    if [ "$rc" -ne 0 ]; then
      problem="run $i exited $rc: $(head -c 2000 "$work/$name.$i.err")"
      break
    fi
    if ! cmp -s "$work/$name.1" "$work/$name.$i"; then
      problem="runs 1 and $i print different transcripts"
      break
    fi
  done
  if [ -z "$problem" ] && [ "$update" -eq 1 ]; then
    cp "$work/$name.1" "$golden"
    echo "wrote  $name.golden"
    good=$((good + 1))
    continue
  fi
  if [ -z "$problem" ] && ! cmp -s "$work/$name.1" "$golden"; then
    problem="differs from $name.golden:
$(diff "$golden" "$work/$name.1" | head -20 || true)"
  fi
  if [ -n "$problem" ]; then
    echo "FAIL   $name: $problem"
  else
    echo "ok     $name"
    good=$((good + 1))
  fi
done
echo "$good/$total scripts: $runs runs each, exit status 0, transcripts identical$([ "$update" -eq 1 ] && echo ", goldens written" || echo " to the goldens")"
[ "$good" -eq "$total" ]
