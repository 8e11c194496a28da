"""``python -m touchflow.cli``: the same as the ``touchflow`` command."""

from touchflow.cli import app

app()
