#!/bin/sh
# Re-vendor the worker package from the deployer module at ../.. so that a
# copy of this directory alone builds (go build uses vendor/ automatically).
# Run it after changing worker/, and commit vendor/.
set -eu
cd "$(dirname "$0")"
go mod tidy
go mod vendor
