#!/usr/bin/env bash
# The project's test command: set-up on a fresh machine (Debian packages
# redis-server, influxdb and chromium, the .venv, the .venv-tpv), then both groups:
#   1. the main suite (tests/), in .venv; extra arguments go to its pytest,
#      e.g. scripts/test.sh -k rank -x
#   2. the TPV group (tests_tpv/): the client inside the real TPV, in
#      .venv-tpv (scripts/test-tpv.sh runs it alone).
# The tests start their own redis-server, influxd and API on free loopback
# ports; nothing is skipped. Exit status: the main suite's if it failed,
# else the TPV group's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --tests
main=0
.venv/bin/python -m pytest "$@" || main=$?
tpv=0
bash scripts/test-tpv.sh || tpv=$?
if (( main != 0 )); then
    exit "$main"
fi
exit "$tpv"
