#!/usr/bin/env bash
# Prints the `go test -run` pattern of the tests in the given package
# directories that skip themselves under the race detector: those whose
# first statement is skipUnderRace(t...). `make test` runs these packages
# under -race, and again without it for those tests alone (Makefile
# PLAIN_TWICE). It fails when a skipUnderRace call is anywhere else, so a
# test cannot drop out of both runs unnoticed.
set -euo pipefail
files=()
for d in "$@"; do
	files+=("${d%/}"/*_test.go)
done
names=$(awk '
	/^func Test[A-Za-z0-9_]*\(t \*testing\.T\) \{$/ {
		name = $2; sub(/\(.*/, "", name)
		if ((getline line) > 0 && line ~ /^\tskipUnderRace\(t[,)]/) print name
	}' "${files[@]}")
calls=$(grep -hc $'^\tskipUnderRace(t[,)]' "${files[@]}" | awk '{ s += $1 } END { print s + 0 }')
found=$(printf '%s\n' "$names" | grep -c . || true)
if [[ $found -eq 0 || $found -ne $calls ]]; then
	echo "race-skipped.sh: $calls skipUnderRace calls in $*, $found of them a test's first statement" >&2
	exit 1
fi
printf '^(%s)$' "$(printf '%s\n' "$names" | paste -sd '|')"
