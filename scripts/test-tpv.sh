#!/usr/bin/env bash
# The TPV test group alone: the client inside the real TPV (tests_tpv/), run
# in .venv-tpv against a live broker started from .venv. scripts/test.sh runs
# it after the main suite. Extra arguments go to pytest, e.g. -k breaker
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap-tpv.sh
# -P: the repository root stays off sys.path, so nothing of the service can
# be imported by accident; TPV sees only what a Galaxy server would have.
exec .venv-tpv/bin/python -P -m pytest -c tests_tpv/pytest.ini tests_tpv "$@"
