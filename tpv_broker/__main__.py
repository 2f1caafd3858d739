"""``python -m tpv_broker`` is the ``tpv-broker`` command."""

from .cli import main

main()
