"""The ``tpv-broker`` command line, on top of every other layer: the
commands (``commands.py``) and ``check-config``'s checks (``checks.py``)."""

from tpv_broker.cli.commands import main

__all__ = ["main"]
