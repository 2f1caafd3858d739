"""scripts/bootstrap.sh installs the test-only Python packages only with
--tests, and catches up on them when --tests first comes to a venv the demo
set up. Run on a copy of the script in a scratch checkout whose .venv/bin/python
records what pip is asked to install (nothing is installed for real)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAIN = "-m pip install -q -e . -e client"
WITH_TESTS = "-m pip install -q -e .[test] -e client"


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "scripts" / "bootstrap.sh", root / "scripts" / "bootstrap.sh")
    (root / "client").mkdir()
    for name in ("pyproject.toml", "client/pyproject.toml"):
        (root / name).write_text("# stand-in\n")
        # Older than any stamp the runs below write.
        os.utime(root / name, (time.time() - 3600, time.time() - 3600))
    _executable(root / ".venv" / "bin" / "python", f'#!/bin/sh\necho "$*" >> "{root}/pip.log"\n')
    # Every program bootstrap.sh looks for, so it installs no Debian package.
    for program in ("redis-server", "influxd", "chromium", "nginx", "systemd-analyze", "systemd-sysusers"):
        _executable(tmp_path / "bin" / program, "#!/bin/sh\nexit 0\n")
    return root


def _bootstrap(root: Path, *args: str) -> list[str]:
    """What pip was asked to install by this run."""
    log = root / "pip.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{root.parent / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(root / "scripts" / "bootstrap.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_the_run_installs_no_test_packages_and_tests_catch_up(checkout: Path) -> None:
    assert _bootstrap(checkout) == [PLAIN]
    assert _bootstrap(checkout) == []
    # The first --tests on the demo's venv must bring the test extra.
    assert _bootstrap(checkout, "--tests") == [WITH_TESTS]
    assert _bootstrap(checkout, "--tests") == []
    assert _bootstrap(checkout) == []


def _age(path: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    os.utime(path, (then, then))


def test_a_changed_pyproject_reinstalls_each_set_once(checkout: Path) -> None:
    assert _bootstrap(checkout, "--tests") == [WITH_TESTS]
    assert _bootstrap(checkout) == []
    for stamp in (".installed-stamp", ".installed-test-stamp"):
        _age(checkout / ".venv" / stamp, 1800)
    _age(checkout / "client" / "pyproject.toml", 900)  # changed since both stamps
    assert _bootstrap(checkout) == [PLAIN]
    assert _bootstrap(checkout) == []
    assert _bootstrap(checkout, "--tests") == [WITH_TESTS]
    assert _bootstrap(checkout, "--tests") == []
