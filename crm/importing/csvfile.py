"""CSV bytes to rows without losing any: the encoding by evidence, rows bounded in size, a bad row skipped whole.

A file is UTF-8 unless its bytes say otherwise: one pass over them counts the non-ASCII
characters that decode as UTF-8 and the bytes that do not, and the encoding explaining more of
them wins (a cp1251 file has almost no valid multi-byte sequences; a UTF-8 file with a row pasted
from a cp1251 one has many). Bytes that do not decode are kept as they are (``surrogateescape``)
and only their rows are rejected, so the rejects file holds them verbatim.

``csv.reader`` raises ``csv.Error`` for a value over ``csv.field_size_limit()`` characters
(131,072 unless changed) and then starts its next row on the next line, which is still inside the
bad row when a quoted value spans lines: those lines would be read as rows of their own.
``Records`` follows the bad row's quotes to its real end instead, and bounds every row at
``ROW_LIMIT`` characters, whatever the field limit is set to: no row can hold a value worth that
much (the widest column stores 2,000 characters), and a stray quote or a binary file cannot make
one row swallow the memory.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TextIO

ROW_LIMIT = 1 << 20  # characters in one row (all its lines): 8 values at csv's field limit
_CHUNK = 1 << 20
_ASCII = bytes(range(128))
_REPLACEMENT = "\ufffd".encode()
_SUSPECT = re.compile("[\x00\udc80-\udcff]")  # a NUL, or a byte the encoding could not decode
_ESCAPED = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Encoding:
    """How to decode a CSV file, and what a pass over its bytes found that will reject rows."""

    name: str
    bad_bytes: int = 0  # bytes not valid in ``name``: their rows are rejected
    nul_bytes: int = 0  # NUL bytes, which no database text column can hold

    @property
    def suspect(self) -> bool:
        """True when some rows must be checked for bytes that cannot be imported."""
        return bool(self.bad_bytes or self.nul_bytes)


class RowUnreadable(Exception):
    """A row cannot be read at all (too long): it is skipped whole and rejected."""


def scan_encoding(path) -> Encoding:
    """Decide between UTF-8 (with or without BOM) and cp1251 by counting evidence, in one streaming pass.

    Raises ValueError for UTF-16 files, which are recognisable by their BOM and need re-saving.
    """
    with open(path, "rb") as fh:
        chunk = fh.read(_CHUNK)
        if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ValueError("the file is UTF-16 (Excel's \"Unicode text\"); save it as \"CSV UTF-8\" and import "
                             "that file")
        bom = chunk.startswith(codecs.BOM_UTF8)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        valid = invalid = nul = cp1251_bad = 0
        tail = b""
        while chunk:
            nul += chunk.count(b"\0")
            if not chunk.isascii():
                text = decoder.decode(chunk)
                genuine = chunk.count(_REPLACEMENT) + (tail + chunk[:2]).count(_REPLACEMENT)
                replaced = text.count("\ufffd") - genuine
                ascii_bytes = len(chunk) - len(chunk.translate(None, _ASCII))
                valid += len(text) - ascii_bytes - replaced
                invalid += replaced
                cp1251_bad += chunk.count(b"\x98")  # the one byte cp1251 leaves undefined
            tail = chunk[-2:]
            chunk = fh.read(_CHUNK)
        invalid += decoder.decode(b"", final=True).count("\ufffd")  # a sequence cut off by the end
    if not invalid:
        return Encoding("utf-8-sig" if bom else "utf-8", nul_bytes=nul)
    if bom or valid > invalid:
        return Encoding("utf-8-sig" if bom else "utf-8", bad_bytes=invalid, nul_bytes=nul)
    return Encoding("cp1251", bad_bytes=cp1251_bad, nul_bytes=nul)


class Records:
    """Physical lines of a CSV text stream for ``csv.reader``, remembering those of the row being read.

    A row may span several lines (a quoted value with line breaks) but at most ``limit``
    characters; past that, ``lines()`` raises RowUnreadable from inside ``csv.reader``, and
    ``skip`` consumes the rest of the row. The caller clears ``pieces`` when a row is complete.
    """

    def __init__(self, text: TextIO, delimiter: str, *, limit: int = ROW_LIMIT) -> None:
        self._readline = text.readline
        self.delimiter = delimiter
        self.limit = limit
        self.pieces: list[str] = []  # the lines of the row being read (the last one cut short when too long)

    def lines(self) -> Iterator[str]:
        """Yield lines for ``csv.reader``, keeping them in ``pieces``; raise RowUnreadable past ``limit``."""
        readline, pieces, limit = self._readline, self.pieces, self.limit
        size = 0
        while True:
            piece = readline(limit)
            if not piece:
                return
            size = size + len(piece) if pieces else len(piece)
            pieces.append(piece)
            if size >= limit and (size > limit or not piece.endswith(("\n", "\r"))):
                raise RowUnreadable(f"the row is longer than {limit:,} characters")
            yield piece

    def skip(self) -> int:
        """Consume the rest of a row ``csv.reader`` failed on, to where the file's quoting says it ends.

        ``csv.reader`` itself would go on at the next line, inside the row when a quoted value spans
        lines. ``_scan`` follows the quotes the way ``csv.reader`` does, without collecting any value,
        so no limit applies and a quote never closed consumes the rest of the file, as csv reads it.
        Returns the number of lines the row spanned.
        """
        state, spanned = _START, 0
        for piece in chain(self.pieces, iter(lambda: self._readline(self.limit), "")):
            state = _scan(piece, state, self.delimiter)
            if piece.endswith(("\n", "\r")) or len(piece) < self.limit:  # a line ends (the last may not end in \n)
                spanned += 1
                if state != _QUOTED:
                    break
        self.pieces.clear()
        return max(spanned, 1)


_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)  # csv.reader's states, as far as they decide where a row ends


def _scan(piece: str, state: int, delimiter: str) -> int:
    """Follow ``csv.reader``'s state machine (default dialect, not strict) over ``piece``; return the state after it.

    A row goes on past the end of a line only in ``_QUOTED``. Inside quotes only a quote matters,
    outside only a delimiter (and a quote right after one), so the scan jumps between them.
    """
    index, end = 0, len(piece)
    while index < end:
        if state == _QUOTED:
            index = piece.find('"', index)
            if index < 0:
                return _QUOTED
            state, index = _QUOTE_IN_QUOTED, index + 1
        elif state == _FIELD:
            index = piece.find(delimiter, index)
            if index < 0:
                return _FIELD
            state, index = _START, index + 1
        else:
            char = piece[index]
            if char == '"':
                state = _QUOTED  # a quote opening a value, or a doubled quote inside one
            elif char == delimiter:
                state = _START
            else:
                state = _FIELD  # a quote inside an unquoted value, or text after a closing quote, is kept as text
            index += 1
    return state


def csv_rows(text: TextIO, delimiter: str, header: list[str], encoding: Encoding
             ) -> Iterator[tuple[int, list[str], str | None]]:
    """Yield (line number, values, None) for each non-blank row, or (line number, values, reason) to reject it.

    The line number is where the row starts (the header is line 1).
    """
    records = Records(text, delimiter)
    pieces = records.pieces
    suspect = encoding.suspect
    start = 2
    while True:
        try:
            for values in csv.reader(records.lines(), delimiter=delimiter):
                number = start
                start += len(pieces)
                if suspect and any(map(_SUSPECT.search, pieces)):
                    pieces.clear()
                    yield number, values, undecodable(values, header, encoding.name)
                    continue
                pieces.clear()
                if (values and values[0].strip()) or any(v.strip() for v in values):
                    yield number, values, None
            return
        except (csv.Error, RowUnreadable) as exc:
            number = start
            start += records.skip()
            yield number, [], unreadable(exc, number, start - 1)


def unreadable(exc: Exception, start: int, end: int) -> str:
    """The rejection reason for a row ``csv.reader`` could not read, with the lines it spanned."""
    where = f"line {start}" if start == end else f"lines {start}–{end}"
    if isinstance(exc, RowUnreadable):
        what = f"{exc}"
    else:
        what = f"a value is longer than {csv.field_size_limit():,} characters"
    return (f"row: {what} ({where}), so it was not read; no column holds that much: look for a quote that "
            "opens a value and is never closed, or shorten the value, then import these lines again")


def undecodable(values: list[str], header: list[str], encoding: str) -> str:
    """The rejection reason for a row holding a NUL or bytes the file's encoding cannot decode."""
    for index, value in enumerate(values):
        found = _SUSPECT.search(value)
        if found is None:
            continue
        column = printable(header[index]) if index < len(header) else f"field {index + 1}"
        if found.group() == "\0":
            return (f"{column}: holds a NUL character (byte 00), which no database text column can store; "
                    "the file is damaged or was not saved as text: remove the character and import the row again")
        shown = " ".join(f"{ord(c) - 0xDC00:02x}" for c in _ESCAPED.findall(value)[:8])
        label = "UTF-8" if encoding.startswith("utf-8") else encoding
        return (f"{column}: bytes {shown} are not valid {label}, while the rest of the file is {label} (the row was "
                f"probably pasted from a file in another encoding); retype the value or re-save the file as "
                f"{label} (Excel: Save As → \"CSV UTF-8\"), then import the row again")
    return "row: a line break inside a value holds bytes that cannot be decoded; retype the value"


def printable(text: str) -> str:
    """``text`` with undecodable bytes shown as U+FFFD, safe to print and to store."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
