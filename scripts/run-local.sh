#!/usr/bin/env bash
# Runs the whole system locally on demo metrics: redis-server, influxd, the
# collector and the rank API, plus a sample rank request, printed one line per
# candidate (--json: as JSON). While it runs, `source .local/demo/env` points
# tpv-broker in another shell at it. Ctrl-C stops it all.
# Options go to the demo: scripts/run-local.sh --help
set -euo pipefail

# Absolute paths instead of cd: a relative --config PATH must still mean
# the caller's working directory.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/python" -m tpv_broker.devtools.demo "$@"
