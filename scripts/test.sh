#!/usr/bin/env bash
# The project's test command: set-up on a fresh machine (Debian packages
# redis-server, influxdb and chromium, the .venv, the .venv-tpv), then:
#   0. the static checks: ruff (the whole tree) and mypy --strict (the
#      package and the client), both configured in pyproject.toml;
#   1. the main suite (tests/), in .venv; extra arguments go to its pytest,
#      e.g. scripts/test.sh -k rank -x
#   2. the TPV group (tests_tpv/): the client inside the real TPV, in
#      .venv-tpv (scripts/test-tpv.sh runs it alone).
# A static finding does not stop the suites (one run shows everything), but
# it fails the command. The tests start their own redis-server, influxd and
# API on free loopback ports; nothing is skipped. Exit status: the main
# suite's if it failed, else the TPV group's, else 1 if a static check
# found something, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --tests

static_failed=()
.venv/bin/ruff check . || static_failed+=(ruff)
.venv/bin/mypy || static_failed+=(mypy)

main=0
.venv/bin/python -m pytest "$@" || main=$?
tpv=0
bash scripts/test-tpv.sh || tpv=$?

# Repeated at the end: the checks' own output is far above the suites'.
if ((${#static_failed[@]})); then
    printf 'test.sh: static checks failed: %s (their findings are printed before the tests)\n' \
        "${static_failed[*]}" >&2
fi
if (( main != 0 )); then
    exit "$main"
fi
if (( tpv != 0 )); then
    exit "$tpv"
fi
if ((${#static_failed[@]})); then
    exit 1
fi
exit 0
