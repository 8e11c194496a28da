"""Helpers for tests: run the CLI in-process and write import files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from touchflow.cli import app


def run_cli(*args: str, input: str | None = None) -> Any:
    """Invoke ``touchflow ARGS`` (with ``input`` on stdin) and return click's Result."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def run_json(*args: str, expect: int = 0) -> Any:
    """Invoke ``touchflow ARGS --json``, check the exit code and return the parsed JSON."""
    result = run_cli(*args, "--json")
    assert result.exit_code == expect, result.output
    return json.loads(result.stdout)


def write_csv(path: Path, header: list[str], rows: list[list[Any]], *, encoding: str = "utf-8",
              delimiter: str = ",") -> Path:
    """Write a CSV file the way a CRM export would."""
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rejects(path: Path, *, errors: str = "strict") -> list[dict[str, str]]:
    """Read a rejects file back (UTF-8 with BOM, delimiter detected).

    ``errors="surrogateescape"`` reads rows kept with bytes their file's encoding could not decode.
    """
    text = path.read_text(encoding="utf-8-sig", errors=errors)
    delimiter = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    return list(csv.DictReader(text.splitlines(), delimiter=delimiter))
