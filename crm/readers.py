"""Stream rows out of CSV and XLSX files the way CRMs and Excel write them.

CSV: UTF-8 with or without BOM, or cp1251 (detected by a streaming pass over the bytes);
comma, semicolon or tab (detected from the header line). XLSX: the first sheet, read-only.
Nothing loads the whole file.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zipfile import BadZipFile

CSV_DELIMITERS = (";", ",", "\t", "|")
_DETECT_CHUNK = 1 << 20


class FileFormatError(ValueError):
    """The file cannot be read as a table at all (fatal for the whole import)."""


@dataclass
class Table:
    """An opened table: its header, where it came from, and a stream of (row number, values)."""

    path: Path
    header: list[str]
    rows: Iterator[tuple[int, list[object]]]
    encoding: str | None = None
    delimiter: str | None = None
    size_bytes: int = 0  # bytes for CSV, rows for XLSX: the unit of ``position``
    position: Callable[[], int] = lambda: 0
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release the file."""
        for closer in self._closers:
            closer()


def detect_encoding(path: Path) -> str:
    """Return ``utf-8-sig``, ``utf-8`` or ``cp1251`` for a CSV file, reading it in chunks."""
    with path.open("rb") as fh:
        head = fh.read(3)
        if head == codecs.BOM_UTF8:
            return "utf-8-sig"
        decoder = codecs.getincrementaldecoder("utf-8")()
        chunk = head
        try:
            while chunk:
                decoder.decode(chunk)
                chunk = fh.read(_DETECT_CHUNK)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1251"
    return "utf-8"


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
    encoding = detect_encoding(path)
    raw = path.open("rb")
    text = io.TextIOWrapper(raw, encoding=encoding, newline="")
    first = text.readline()
    if not first.strip():
        text.close()
        raise FileFormatError(f"{path}: the file is empty or its first line (the header) is blank")
    delimiter = detect_delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter))

    def rows() -> Iterator[tuple[int, list[object]]]:
        reader = csv.reader(text, delimiter=delimiter)
        for values in reader:
            if any(v.strip() for v in values):
                yield reader.line_num + 1, values

    table = Table(path=path, header=header, rows=rows(), encoding=encoding, delimiter=delimiter,
                  size_bytes=os.path.getsize(path))
    table._closers.append(text.close)
    table.position = raw.tell
    return table


def _open_xlsx(path: Path) -> Table:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, BadZipFile, KeyError, OSError, ValueError) as exc:
        raise FileFormatError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    sheet = workbook.worksheets[0]
    iterator = sheet.iter_rows(values_only=True)
    try:
        header_row = next(iterator)
    except StopIteration:
        workbook.close()
        raise FileFormatError(f"{path}: the first sheet is empty") from None
    header = ["" if v is None else str(v) for v in header_row]
    counter = {"row": 1}

    def rows() -> Iterator[tuple[int, list[object]]]:
        for number, values in enumerate(iterator, start=2):
            counter["row"] = number
            cells = ["" if v is None else v for v in values]
            if not any(str(v).strip() for v in cells):
                continue
            yield number, cells

    table = Table(path=path, header=header, rows=rows(), size_bytes=sheet.max_row or 0)
    table._closers.append(workbook.close)
    table.position = lambda: counter["row"]
    return table
