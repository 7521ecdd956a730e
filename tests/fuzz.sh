#!/usr/bin/env bash
# Runs every native Go fuzz target and prints the executions of each.
#
# make test runs each target for a fixed number of executions (the budget
# column below, sized to ~10-15 s on a 2-core machine). A count, not a
# duration: go1.26's fuzz coordinator can fail a target with a bare
# "context deadline exceeded" when a -fuzztime duration expires while a
# worker is mid-call (go.dev/issue/75804, fixed in Go 1.27), which is a
# toolchain race, not a finding. On demand, a duration still works:
#   make fuzz FUZZTIME=10m
# A crash is written to the package's testdata/fuzz/<Target>/ by go test and
# fails the run; commit that file with the fix, so that it stays a
# regression test (go test runs testdata/fuzz inputs as seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-}
GO=${GO:-go}
export GOFLAGS=${GOFLAGS:--buildvcs=false -tags=containers_image_openpgp,exclude_graphdriver_btrfs}
# package:target:executions
targets=(
  ./pkg/boundimages:FuzzDiscoverQuadlet:5000
  ./pkg/boundimages:FuzzSpecValue:500000
  ./pkg/sysroot:FuzzOriginKeyfile:500000
  ./pkg/sysroot:FuzzOriginFields:300000
  ./pkg/bls:FuzzBLSEntry:15000
  ./pkg/bls:FuzzKargsD:200000
  ./pkg/etcmerge:FuzzMergeDecisions:1000
  ./pkg/progress:FuzzJSONPull:30000
)
status=0
summary=()
for t in "${targets[@]}"; do
  IFS=: read -r pkg fn budget <<<"$t"
  limit=${FUZZTIME:-${budget}x}
  log=$(mktemp)
  start=$SECONDS
  if ! $GO test -count=1 -run '^$' -fuzz "^${fn}\$" -fuzztime "$limit" "$pkg" >"$log" 2>&1; then
    cat "$log"
    status=1
  fi
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  summary+=("$(printf '%-22s %-20s %10s execs in %3ds (limit %s)' "$pkg" "$fn" "${execs:-?}" "$((SECONDS - start))" "$limit")")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
