"""``python -m mother_core`` is the ``mother`` command."""

from mother_core.cli import run

run()
