#!/usr/bin/env bash
# Idempotent set-up of a development machine (Debian/Ubuntu, Python 3.11+):
# the redis-server and influxd binaries the test fixtures launch, and .venv.
# Safe to re-run; does nothing that is already done.
#   --tests  also what only the test suite needs: Debian's chromium, which
#            the status page and /docs tests drive headless (scripts/test.sh
#            passes it; scripts/run-local.sh does not need a browser).
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

# nginx and systemd's tools, for the tests of deploy/ (tests/test_nginx_proxy.py
# runs the nginx example, tests/test_deployment_files.py runs systemd-analyze
# and systemd-sysusers on the units). Nothing is started: the tests run nginx
# on free loopback ports. On a machine running systemd, Debian's nginx package
# starts its default site on port 80 (`systemctl disable --now nginx` stops it).
deploy_packages=()
have nginx || deploy_packages+=(nginx)
have systemd-analyze && have systemd-sysusers || deploy_packages+=(systemd)
if ((${#deploy_packages[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 \
            || die "${deploy_packages[*]} missing and not root, and sudo is not available: run as root: apt-get install ${deploy_packages[*]}"
        sudo=(sudo)
    fi
    say "installing Debian packages ${deploy_packages[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${deploy_packages[@]}" \
        || { "${sudo[@]}" apt-get update -q && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${deploy_packages[@]}"; } \
        || die "apt-get install ${deploy_packages[*]} failed"
    have nginx || die "nginx still not found after installing"
    have systemd-analyze || die "systemd-analyze still not found after installing"
else
    say "nginx and systemd-analyze present"
fi

if (( with_tests )); then
    if have chromium || have chromium-browser; then
        say "chromium present"
    else
        apt_install "chromium (for the browser tests)" chromium
        have chromium || die "chromium still not found after installing"
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

stamp=.venv/.installed-stamp
if [[ ! -e $stamp || pyproject.toml -nt $stamp || client/pyproject.toml -nt $stamp ]]; then
    say "installing tpv-broker, its TPV-side client and test dependencies into .venv"
    .venv/bin/python -m pip install -q -e '.[test]' -e client
    touch "$stamp"
else
    say ".venv up to date"
fi

say "done"
