#!/usr/bin/env bash
# Idempotent set-up of a development machine (Debian/Ubuntu, Python 3.11+):
# the redis-server and influxd binaries the test fixtures launch, and .venv.
# Safe to re-run; does nothing that is already done.
#   --tests  also what only the test suite needs (scripts/test.sh passes it;
#            scripts/run-local.sh needs none of it): the Python packages of
#            the `test` extra, Debian's chromium, which the status page and
#            /docs tests drive headless, nginx and systemd's tools for the
#            tests of the deploy/ files.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# Debian installs some daemons under sbin, which is not on every user's PATH.
have() { PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

with_tests=0
for arg in "$@"; do
    case $arg in
        --tests) with_tests=1 ;;
        *) die "unknown option: $arg (known: --tests)" ;;
    esac
done

# apt_install WHAT PACKAGE...: WHAT says what is missing, for the messages.
apt_install() {
    local what=$1; shift
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 \
            || die "$what missing and not root, and sudo is not available: run as root: apt-get install $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install $what by hand"
    say "installing Debian packages $*"
    "${sudo[@]}" apt-get update -q \
        || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" \
        || die "apt-get install $* failed"
}

install_servers() {
    # The test fixtures never use the system services, only the binaries; if
    # the packages start services on systemd machines they sit on other ports.
    apt_install "redis-server (7.x) and influxd (InfluxDB 1.x)" redis-server influxdb
}

if have redis-server && have influxd; then
    say "redis-server and influxd present"
else
    install_servers
    have redis-server || die "redis-server still not found after installing"
    have influxd || die "influxd still not found after installing"
fi

if (( with_tests )); then
    # What only the tests need, one apt run for all that is missing:
    # chromium drives the status page and /docs; nginx and systemd's tools
    # check the deploy/ files (tests/test_nginx_proxy.py runs the nginx
    # example on free loopback ports, tests/test_deployment_files.py runs
    # systemd-analyze and systemd-sysusers on the units; Debian's prometheus
    # package brings promtool, which evaluates every query of the Grafana
    # dashboard, tests/test_grafana_dashboard.py). Nothing is started
    # here. On a machine running systemd, Debian's nginx package starts its
    # default site on port 80 (`systemctl disable --now nginx` stops it).
    test_packages=()
    have chromium || have chromium-browser || test_packages+=(chromium)
    have nginx || test_packages+=(nginx)
    { have systemd-analyze && have systemd-sysusers; } || test_packages+=(systemd)
    have promtool || test_packages+=(prometheus)
    if ((${#test_packages[@]})); then
        apt_install "${test_packages[*]} (for the tests)" "${test_packages[@]}"
        { have chromium || have chromium-browser; } || die "chromium still not found after installing"
        have nginx || die "nginx still not found after installing"
        have systemd-analyze || die "systemd-analyze still not found after installing"
        have promtool || die "promtool still not found after installing (Debian package prometheus)"
    else
        say "chromium, nginx, systemd-analyze and promtool present"
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found: install Python 3.11 or newer"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); TPV Broker needs 3.11 or newer"
    say "creating .venv"
    python3 -m venv .venv \
        || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# One stamp per set of packages: a venv that ran the demo first must still
# get the test extras on the first --tests run, and either reinstalls when a
# pyproject.toml changed after its stamp.
run_stamp=.venv/.installed-stamp
test_stamp=.venv/.installed-test-stamp
outdated() { [[ ! -e $1 || pyproject.toml -nt $1 || client/pyproject.toml -nt $1 ]]; }
if (( with_tests )) && outdated "$test_stamp"; then
    say "installing tpv-broker, its TPV-side client and the test dependencies into .venv"
    .venv/bin/python -m pip install -q -e '.[test]' -e client
    touch "$run_stamp" "$test_stamp"
elif outdated "$run_stamp"; then
    say "installing tpv-broker and its TPV-side client into .venv"
    .venv/bin/python -m pip install -q -e . -e client
    touch "$run_stamp"
else
    say ".venv up to date"
fi

say "done"
