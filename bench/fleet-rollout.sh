#!/bin/sh
# Time for one push to go live on three hosts: a fleet rollout (built once
# on the entry host, shipped to two peers, live host by host) against three
# pushes by hand to three independent hosts, measured in the same run on
# this machine (three daemons on loopback, separate data dirs and ports).
# Prints the medians of 5 rounds and their ratio.
set -eu
cd "$(dirname "$0")/.."
DEPLOYER_BENCH=1 go test -count=1 -v -timeout 20m -run TestBenchFleetRolloutAgainstThreePushes ./cmd/deployer |
	grep -E 'push live on 3 hosts|all rounds|^(ok|FAIL|---)'
