#!/usr/bin/env bash
# Runs every native Go fuzz target for FUZZTIME each (default 15s; CI runs
# it through make test) and prints the executions of each. On demand:
#   make fuzz FUZZTIME=10m
# A crash is written to the package's testdata/fuzz/<Target>/ by go test and
# fails the run; commit that file with the fix, so that it stays a
# regression test (go test runs testdata/fuzz inputs as seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-15s}
GO=${GO:-go}
export GOFLAGS=${GOFLAGS:--buildvcs=false -tags=containers_image_openpgp,exclude_graphdriver_btrfs}
targets=(
  ./pkg/boundimages:FuzzDiscoverQuadlet
  ./pkg/boundimages:FuzzSpecValue
  ./pkg/sysroot:FuzzOriginKeyfile
  ./pkg/sysroot:FuzzOriginFields
  ./pkg/bls:FuzzBLSEntry
  ./pkg/bls:FuzzKargsD
  ./pkg/etcmerge:FuzzMergeDecisions
  ./pkg/progress:FuzzJSONPull
)
status=0
summary=()
for t in "${targets[@]}"; do
  pkg=${t%%:*} fn=${t##*:}
  log=$(mktemp)
  if ! $GO test -count=1 -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
    cat "$log"
    status=1
  fi
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  summary+=("$(printf '%-22s %-20s %10s execs in %s' "$pkg" "$fn" "${execs:-?}" "$FUZZTIME")")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
