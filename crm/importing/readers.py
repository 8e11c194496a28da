"""Stream rows out of CSV and XLSX files the way CRMs and Excel write them.

CSV: UTF-8 with or without BOM, or cp1251, decided by a streaming pass over the bytes; comma,
semicolon, tab or bar (detected from the header line); see ``csvfile`` for rows that cannot be
read. XLSX: the first sheet, read-only, with the values Excel stored for formulas; a formula with
no stored value is told apart from an empty cell. Nothing loads the whole file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from zipfile import BadZipFile

from crm.importing.csvfile import ROW_LIMIT, csv_rows, printable, scan_encoding

CSV_DELIMITERS = (";", ",", "\t", "|")


class FileFormatError(ValueError):
    """The file cannot be read as a table at all (fatal for the whole import)."""


@dataclass(frozen=True)
class Uncalculated:
    """Positions of Excel formula cells in a row with no value stored for them (the file was never saved by Excel).

    Such a cell says nothing about the value, so it must not count as empty (which clears a field).
    """

    positions: tuple[int, ...]


RowIssue = Union[str, Uncalculated, None]  # str: the row is rejected with this reason


@dataclass
class Table:
    """An opened table: its header, where it came from, and a stream of (row number, values, issue)."""

    path: Path
    header: list[str]
    rows: Iterator[tuple[int, list[object], RowIssue]]
    encoding: str | None = None
    delimiter: str | None = None
    size_bytes: int = 0  # bytes for CSV, rows for XLSX: the unit of ``position``
    position: Callable[[], int] = lambda: 0
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release the file."""
        for closer in self._closers:
            closer()


def detect_delimiter(header_line: str) -> str:
    """Pick the delimiter that splits the header line into the most columns."""
    counts = {d: header_line.count(d) for d in CSV_DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def open_table(path: Path | str) -> Table:
    """Open a CSV or XLSX file for streaming; raise FileFormatError if it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    if not path.is_file():
        raise FileFormatError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _open_xlsx(path)
    if suffix == ".xls":
        raise FileFormatError(f"{path}: old Excel .xls is not supported; save it as .xlsx or CSV")
    return _open_csv(path)


def _open_csv(path: Path) -> Table:
    try:
        encoding = scan_encoding(path)
    except ValueError as exc:
        raise FileFormatError(f"{path}: {exc}") from None
    raw = path.open("rb")
    text = io.TextIOWrapper(raw, encoding=encoding.name, errors="surrogateescape", newline="")
    try:
        first = _header_line(text, path, encoding.name)
    except FileFormatError:
        text.close()
        raise
    delimiter = detect_delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter))
    table = Table(path=path, header=header, rows=csv_rows(text, delimiter, header, encoding),
                  encoding=encoding.name, delimiter=delimiter, size_bytes=os.path.getsize(path))
    table._closers.append(text.close)
    table.position = raw.tell
    return table


def _header_line(text: io.TextIOWrapper, path: Path, encoding: str) -> str:
    """Read the first line, which must be a header: not blank, of bounded length, every byte decoded."""
    first = text.readline(ROW_LIMIT)
    if not first.strip():
        raise FileFormatError(f"{path}: the file is empty or its first line (the header) is blank")
    if len(first) == ROW_LIMIT and not first.endswith(("\n", "\r")):
        raise FileFormatError(f"{path}: the first line (the header) is longer than {ROW_LIMIT:,} characters; "
                              "this is not a CSV file, or its lines do not end")
    if "\0" in first:
        raise FileFormatError(f"{path}: the header line holds NUL characters; this is not a text CSV file: "
                              "save it as \"CSV UTF-8\"")
    if printable(first) != first:
        raise FileFormatError(f"{path}: the header line {printable(first.strip())!r} holds bytes that are not "
                              f"valid {encoding}; save the file as \"CSV UTF-8\"")
    return first


def _open_xlsx(path: Path) -> Table:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, BadZipFile, KeyError, OSError, ValueError) as exc:
        raise FileFormatError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    sheet = workbook.worksheets[0]
    counter = {"row": 1}
    rows = _sheet_rows(workbook, sheet, counter)
    try:
        _, header_row, _ = next(rows)
    except StopIteration:
        workbook.close()
        raise FileFormatError(f"{path}: the first sheet is empty") from None
    header = ["" if v is None else str(v) for v in header_row]
    table = Table(path=path, header=header, rows=rows, size_bytes=sheet.max_row or 0)
    table._closers.append(rows.close)
    table._closers.append(workbook.close)
    table.position = lambda: counter["row"]
    return table


def _sheet_rows(workbook, sheet, counter: dict[str, int]) -> Iterator[tuple[int, list[object], RowIssue]]:
    """Yield the sheet's non-blank rows as (row number, values from column A, issue); the first is the header.

    openpyxl's ``data_only`` mode reads a formula cell with no stored value as None, exactly like an
    empty cell; its sheet parser is asked per cell whether a formula is there (openpyxl 3.1 internals,
    pinned below 4 in pyproject.toml: the XLSX tests fail loudly should they change). A cell holding
    an Excel error (#N/A, #REF!, …) rejects its row.
    """
    from openpyxl.worksheet._reader import FORMULA_TAG, VALUE_TAG, WorkSheetParser

    class Parser(WorkSheetParser):
        def parse_cell(self, element):
            cell = super().parse_cell(element)
            # a stored empty string is typed "str"; openpyxl writes an empty <v/> for a formula it cannot calculate
            if (cell["value"] is None and cell["data_type"] != "str" and element.find(FORMULA_TAG) is not None
                    and not element.findtext(VALUE_TAG)):
                cell["value"] = NO_VALUE
            return cell

    header: list[object] = []
    with sheet._get_source() as source:
        parser = Parser(source, sheet._shared_strings, data_only=True, epoch=workbook.epoch,
                        date_formats=workbook._date_formats, timedelta_formats=workbook._timedelta_formats)
        for number, cells in parser.parse():
            counter["row"] = number
            if not cells:
                continue
            values: list[object] = [""] * cells[-1]["column"]
            odd = []
            for cell in cells:
                value = cell["value"]
                if value is not None:
                    values[cell["column"] - 1] = value
                    if value is NO_VALUE or cell["data_type"] == "e":
                        odd.append(cell)
            if not header:
                header = values
                yield number, values, None
            elif odd:
                yield number, values, _issue(odd, number, header)
            elif (values[0] and str(values[0]).strip()) or any(str(v).strip() for v in values):
                yield number, values, None


def _issue(cells: list[dict], number: int, header: list[object]) -> RowIssue:
    """What is wrong with a row's formula cells: the first Excel error rejects it; else the cells with no value."""
    from openpyxl.utils import get_column_letter

    for cell in cells:
        if cell["value"] is not NO_VALUE:
            index = cell["column"] - 1
            column = get_column_letter(index + 1)
            name = header[index] if index < len(header) and header[index] != "" else column
            return (f"{name}: cell {column}{number} holds the Excel error {cell['value']}; fix the formula (or "
                    "type the value) in Excel, save, and import the row again")
    return Uncalculated(tuple(cell["column"] - 1 for cell in cells))


class _NoValue:
    """A formula cell with no stored value: nothing is known, so the rejects file shows it empty."""

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __reduce__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()
