"""The ``tpv-broker`` command line, on top of every other layer: the
commands (``commands.py``, ``health.py``) and ``check-config``'s checks
(``checks.py``)."""

from tpv_broker.cli.commands import main
from tpv_broker.cli.health import health

main.add_command(health)

__all__ = ["main"]
