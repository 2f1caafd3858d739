#!/usr/bin/env bash
# The project's test command: set-up on a fresh machine (Debian packages
# redis-server and influxdb, the .venv), then the whole suite. The tests start
# their own redis-server and influxd on free loopback ports; nothing is skipped.
# Extra arguments go to pytest, e.g. scripts/test.sh -k rank -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
