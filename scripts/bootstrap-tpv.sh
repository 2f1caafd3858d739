#!/usr/bin/env bash
# Idempotent set-up of .venv-tpv for the TPV test group (tests_tpv/): the
# real TPV and Galaxy from PyPI, as on a Galaxy server, plus the client from
# client/ and pytest. Never the service itself: the tests run the live broker
# from .venv (scripts/bootstrap.sh). galaxy-app is large (about 1.2 GB
# installed, a few minutes the first time); later runs do nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'bootstrap-tpv: %s\n' "$*"; }
die() { printf 'bootstrap-tpv: error: %s\n' "$*" >&2; exit 1; }

# .venv first: the tests run the live broker from it, and bootstrap.sh has
# checked python3 already.
bash scripts/bootstrap.sh

venv=.venv-tpv
if [[ ! -x $venv/bin/python ]]; then
    say "creating $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed"
fi

stamp=$venv/.installed-stamp
if [[ ! -e $stamp || tests_tpv/requirements.txt -nt $stamp || client/pyproject.toml -nt $stamp ]]; then
    say "installing total-perspective-vortex, galaxy-app and the client into $venv"
    started=$SECONDS
    rc=0
    "$venv/bin/python" -m pip install -q -r tests_tpv/requirements.txt -e client || rc=$?
    if (( rc != 0 )); then
        printf 'bootstrap-tpv: error: pip install failed (exit %d)\n' "$rc" >&2
        exit "$rc"
    fi
    say "installed in $((SECONDS - started)) s"
    touch "$stamp"
else
    say "$venv up to date"
fi
