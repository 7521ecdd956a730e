#!/usr/bin/env bash
# run-suite.sh LOG CMD...: runs a verbose go test command, keeps its whole
# output in LOG and prints the test and figure lines as they come, each
# with the time, so a CI log shows where a slow suite is; on failure it
# prints LOG's tail, where go test puts the panic of a timeout and the
# guest consoles of failed boot tests.
set -uo pipefail
log=$1
shift
# -a: a guest console in the output holds control bytes, and grep would
# otherwise call the stream binary and print nothing more.
"$@" 2>&1 | tee "$log" | grep -a --line-buffered -E '^(=== RUN|\s*--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' |
	while IFS= read -r line; do printf '%s %s\n' "$(date +%T)" "$line"; done
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
	echo "--- $* failed ($rc); the last lines of $log:"
	tail -n 150 "$log" | tr -cd '\11\12\40-\176'
	# Last, as a CI summary may show only the end: what failed, and the
	# tests' own messages (their first lines) before that.
	echo "--- the failed tests, and the last messages of the tests, from $log:"
	grep -a -E '^\s*--- FAIL' "$log"
	grep -a -E '^\s+\S+_test\.go:[0-9]+: ' "$log" | grep -a -v 'FIGURE' | tail -n 12 | cut -c1-300 | tr -cd '\11\12\40-\176'
fi
exit "$rc"
