"""Import customers, purchases, service events and consents from CSV / XLSX files.

Rows stream in batches; each batch is validated row by row, then written with a few bulk
statements and committed, so a crash loses at most the batch in flight and a rerun repeats
nothing (every kind upserts or deduplicates on a stable key). Rejected rows are written,
verbatim and with their row number and reason, to a rejects file that can be fixed and
imported again. Every import is recorded in ``import_runs``, a failed one with its error.
Big files are validated in a second process; should it die, the import fails naming it rather
than waiting for it.
"""

from __future__ import annotations

import csv
import gc
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from crm.db import BASE_TABLES, refresh_statistics, write_tx
from crm.importing.columns import SPECS, resolve_header
from crm.importing.csvfile import printable
from crm.importing.readers import FileFormatError, RowIssue, Table, Uncalculated, open_table
from crm.importing.writers import WRITERS, ImportOptions, RowError
from crm.models import ImportRun, utcnow
from crm.persons import refresh_persons
from touchflow.errors import InputError

KINDS = tuple(SPECS)
ProgressCallback = Callable[[int, int], None]


class ImportFailed(InputError):
    """The file cannot be imported at all (unreadable, unknown or missing columns, its validation process died)."""


@dataclass
class ImportSummary:
    """What an import did; ``accepted`` = created + updated + unchanged valid rows."""

    kind: str
    path: str
    rows: int = 0
    accepted: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    seconds: float = 0.0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    people: int | None = None  # persons in the base after a customers import that changed it
    last_row: int = 0  # the last row written (with the rows before it)
    touched_customers: set[int] | None = field(default_factory=set, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-ready data (without the touched customer ids)."""
        data = asdict(self)
        data.pop("touched_customers")
        return data

    @property
    def rows_per_second(self) -> float:
        """Rows handled per second of wall time."""
        return self.rows / self.seconds if self.seconds else 0.0


class RejectsWriter:
    """Write rejected rows (original values + ``_row`` + ``_reason``), opening the file on first use."""

    def __init__(self, path: Path, header: list[str], delimiter: str) -> None:
        self.path = path
        self.header = header
        self.delimiter = delimiter
        self._fh = None
        self._writer = None

    def write(self, row_number: int, reason: str, values: list[object]) -> None:
        """Append one rejected row."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # undecodable bytes of the source (kept as surrogates) go back out as they came in
            self._fh = self.path.open("w", encoding="utf-8-sig", errors="surrogateescape", newline="")
            self._writer = csv.writer(self._fh, delimiter=self.delimiter)
            self._writer.writerow(["_row", "_reason", *self.header])
        self._writer.writerow([row_number, reason, *("" if v is None else v for v in values or ())])

    def close(self) -> None:
        """Flush and close the file if it was opened."""
        if self._fh is not None:
            self._fh.close()

    @property
    def used(self) -> bool:
        """True when at least one row was written."""
        return self._writer is not None


def default_rejects_path(path: Path) -> Path:
    """Return ``<file>.rejects.csv`` beside the imported file."""
    return path.with_name(path.name + ".rejects.csv")


def import_file(
    engine: Engine,
    kind: str,
    path: Path | str,
    *,
    options: ImportOptions | None = None,
    rejects_path: Path | str | None = None,
    progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Import one file of ``kind`` (customers, purchases, events, consents) and return the summary.

    Row problems go to the rejects file; problems with the whole file raise ImportFailed. Either way
    the run is recorded in ``import_runs`` (``failed`` with the error when it raises), and a customers
    import that changed anyone regroups the records into persons (``crm.persons``).
    """
    path = Path(path)
    summary = ImportSummary(kind=kind, path=str(path))
    started_at = utcnow()
    try:
        if kind not in SPECS:
            raise ImportFailed(f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}")
        _import(engine, summary, options or ImportOptions(),
                Path(rejects_path) if rejects_path else default_rejects_path(path), progress)
        summary.people = _refresh_persons(engine, summary)
    except (Exception, KeyboardInterrupt) as exc:
        _after_failure(engine, summary, started_at, exc)
        raise
    _record_run(engine, summary, started_at)
    refresh_statistics(engine, BASE_TABLES)  # campaigns look customers up by id lists right after
    return summary


def _import(engine: Engine, summary: ImportSummary, options: ImportOptions, rejects_path: Path,
            progress: ProgressCallback | None) -> None:
    """Open the file, match its header, and run it through; whole-file problems raise ImportFailed."""
    path = Path(summary.path)
    try:
        table = open_table(path)
    except FileFormatError as exc:
        raise ImportFailed(str(exc)) from exc
    try:
        try:
            positions = resolve_header(SPECS[summary.kind], table.header, options.column_map)
        except ValueError as exc:
            raise ImportFailed(f"{path}: {exc}") from exc
        _run(engine, summary, table, positions, options, rejects_path, progress)
    finally:
        table.close()


def _refresh_persons(engine: Engine, summary: ImportSummary) -> int | None:
    """Regroup records into persons after a customers import that created or changed any record or address.

    Done here, not by callers, so that an import adding only an email that two records share makes
    them one person for the contact policy whoever ran it.
    """
    if summary.kind != "customers" or not (summary.created or summary.updated):
        return None
    return refresh_persons(engine)


def _after_failure(engine: Engine, summary: ImportSummary, started_at, exc: BaseException) -> None:
    """Record a failed run (with what was imported before it failed) without hiding the error."""
    error = str(exc) if isinstance(exc, ImportFailed) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Exception) and summary.people is None:
        try:
            summary.people = _refresh_persons(engine, summary)  # the batches written before the failure count too
        except Exception:  # noqa: BLE001 - the import's own error is the one to raise
            pass
    try:
        _record_run(engine, summary, started_at, error=error)
    except Exception as record_error:  # noqa: BLE001 - e.g. the database is what failed
        exc.add_note(f"(the failed run could not be recorded in import_runs: {record_error})")


ParsedRow = tuple[int, "list[object] | None", Any]  # (row number, raw values, record or rejection reason)
PARALLEL_MIN_BYTES = 4 << 20
HELPER_POLL_SECONDS = 0.5  # how often a silent validation process is checked for being alive
READ_AHEAD = 4  # parsed batches the validation process may hold ready


class RowParser:
    """Turn a row the reader yields into a parsed record or a rejection reason."""

    def __init__(self, kind: str, table: Table, positions: dict[int, str], options: ImportOptions) -> None:
        self.writer = WRITERS[kind](options, table.path)
        self.width = len(table.header)
        self.positions = positions
        self.header = table.header
        self.required = {index for index, name in positions.items() if name in SPECS[kind].required}

    def __call__(self, number: int, values: list[object], issue: RowIssue) -> ParsedRow:
        writer = self.writer
        record: Any
        if isinstance(issue, str):
            record = issue
        elif len(values) > self.width and any(str(v).strip() for v in values[self.width:]):
            record = (f"row has {len(values)} fields but the header has {self.width}; "
                      "check for an unquoted delimiter inside a value")
        elif issue is not None:
            record = self._without_uncalculated(number, values, issue)
        else:
            try:
                record = writer.parse({name: _cell(values, index) for index, name in self.positions.items()})
            except (RowError, ValueError) as exc:
                record = str(exc)
        # rows the writer can no longer reject need not carry their raw values back (less to pickle)
        keep = isinstance(record, str) or writer.rejects_on_write
        return number, values if keep else None, record

    def _without_uncalculated(self, number: int, values: list[object], issue: Uncalculated) -> Any:
        """Parse a row leaving out its formula cells that have no stored value, or say why it cannot be.

        Such a cell counts as absent, so the stored value stays; it cannot be left out of a required
        column, nor of a row that adds a record (a purchase, an event, a consent) rather than updating one.
        """
        from openpyxl.utils import get_column_letter

        def where(index: int) -> str:
            column = get_column_letter(index + 1)
            return f"{printable(self.header[index]) if index < len(self.header) else column} (cell {column}{number})"

        fix = ("is a formula with no value stored in the file (it was written by a program, not saved by Excel): "
               "open the file in Excel or LibreOffice and save it, so the values are stored, then import it again")
        cells = [index for index in issue.positions if index in self.positions]
        blocking = [index for index in cells if index in self.required or not self.writer.partial_rows]
        if blocking:
            return f"{', '.join(map(where, blocking))} {fix}"
        try:
            return self.writer.parse({name: _cell(values, index) for index, name in self.positions.items()
                                      if index not in issue.positions})
        except (RowError, ValueError) as exc:
            return f"{exc}; also, {', '.join(map(where, cells))} {fix} (it is left empty in this file)"


def parse_rows(kind: str, table: Table, positions: dict[int, str], options: ImportOptions
               ) -> Iterator[tuple[list[ParsedRow], int]]:
    """Yield batches of (row number, values, parsed record or rejection reason) and the file position."""
    parse = RowParser(kind, table, positions, options)
    rows = iter(table.rows)
    while True:
        with gc_paused():
            chunk = [parse(number, values, issue) for number, values, issue in islice(rows, options.batch_size)]
        if not chunk:
            return
        yield chunk, table.position()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch of objects is built or unpickled.

    Building a batch of thousands of tuples and dicts triggers collections that rescan every
    object still alive, which costs more than the work itself (7 µs a row when unpickling parsed
    customers, against 1.4 µs with the collector paused). Cycles made meanwhile are collected
    once it runs again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _produce(kind: str, path: str, positions: dict[int, str], options: ImportOptions, connection: Any) -> None:
    """Child process: read and validate the file, send parsed batches to the writer through ``connection``.

    A thread pickles and sends while the next batches are parsed, up to ``READ_AHEAD`` of them, so
    a slow batch on either side does not stall the other (what ``multiprocessing.Queue``'s feeder
    thread did). Should the sending fail (the parent is gone), the process ends instead of waiting.
    """
    outbox: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    sender = threading.Thread(target=_send_all, args=(outbox, connection), daemon=True)
    sender.start()

    def put(item: Any) -> None:
        while sender.is_alive():
            try:
                return outbox.put(item, timeout=HELPER_POLL_SECONDS)
            except queue.Full:
                pass
        raise BrokenPipeError("the importing process no longer reads the batches")

    try:
        table = open_table(path)
        try:
            for item in parse_rows(kind, table, positions, options):
                put(item)
        finally:
            table.close()
        put(None)
    except BaseException as exc:  # report anything to the parent instead of dying silently
        if not sender.is_alive():
            raise  # nobody left to tell: the exit code says it
        put(RuntimeError(f"{exc!r}"))
    finally:
        sender.join()
        connection.close()


def _send_all(outbox: queue.Queue, connection: Any) -> None:
    """Child's sending thread: pickle and send each batch until the last one (None) or an error."""
    while True:
        item = outbox.get()
        connection.send(item)
        if item is None or isinstance(item, BaseException):
            return


class HelperDied(Exception):
    """The validation process ended without finishing its work (killed, crashed, or failed)."""


def _parallel_rows(kind: str, table: Table, positions: dict[int, str], options: ImportOptions
                   ) -> Iterator[tuple[list[ParsedRow], int]]:
    """Run ``parse_rows`` in a second process so validation and database writes use both cores.

    Batches come through a one-way pipe whose writing end only the child holds: if the child dies,
    even in the middle of sending a batch, reading ends with EOFError instead of waiting forever
    (a ``multiprocessing.Queue`` keeps its writing end open in this process too). While no batch
    arrives, the child is checked every ``HELPER_POLL_SECONDS``. Raises HelperDied.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_produce, args=(kind, str(table.path), positions, options, sender),
                              name="touchflow-import-validation", daemon=True)
    process.start()
    sender.close()
    try:
        while True:
            try:
                while not receiver.poll(HELPER_POLL_SECONDS):
                    if not process.is_alive():
                        raise EOFError
                with gc_paused():
                    item = receiver.recv()
            except (EOFError, OSError):
                process.join(5)
                raise HelperDied(_ended(process, "it ended")) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise HelperDied(_ended(process, f"it failed with {item}"))
            yield item
    finally:
        receiver.close()
        if process.is_alive():
            process.terminate()
        process.join()


def _ended(process: Any, how: str) -> str:
    """Describe how the validation process ended: its pid and exit code, or the signal that killed it."""
    code = process.exitcode
    if code is None:
        status = "is still running"
    elif code < 0:
        try:
            status = f"was killed by signal {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            status = f"was killed by signal {-code} (exit code {code})"
    else:
        status = f"exited with code {code}"
    return f"the validation process (pid {process.pid}) {status}; {how} before it had read the whole file"


def _run(
    engine: Engine,
    summary: ImportSummary,
    table: Table,
    positions: dict[int, str],
    options: ImportOptions,
    rejects_path: Path,
    progress: ProgressCallback | None,
) -> None:
    started = time.perf_counter()
    kind = summary.kind
    summary.encoding, summary.delimiter = table.encoding, table.delimiter
    rejects = RejectsWriter(rejects_path, table.header, table.delimiter or ";")
    writer = WRITERS[kind](options, table.path)
    batch: list[ParsedRow] = []
    batch_keys: set[str] = set()

    def reject(number: int, values: list[object], reason: str) -> None:
        summary.rejected += 1
        label = reason.split(" ", 1)[0].rstrip(":")
        summary.rejection_reasons[label] = summary.rejection_reasons.get(label, 0) + 1
        rejects.write(number, reason, values)

    def flush() -> None:
        if not batch:
            return
        valid = [record for _, _, record in batch if not isinstance(record, str)]
        outcomes: Iterator[str] = iter(())
        if valid:
            with write_tx(engine) as conn, gc_paused():
                outcomes = iter(writer.write(conn, valid))
        for number, values, record in batch:
            outcome = record if isinstance(record, str) else next(outcomes)
            if outcome not in ("created", "updated", "unchanged"):
                reject(number, values, outcome)
            else:
                setattr(summary, outcome, getattr(summary, outcome) + 1)
                summary.accepted += 1
        summary.last_row = batch[-1][0]
        batch.clear()
        batch_keys.clear()

    parallel = options.parallel if options.parallel is not None else table.size_bytes >= PARALLEL_MIN_BYTES
    if table.encoding is None:  # XLSX: openpyxl streams rows; keep it in one process
        parallel = False
    batches = (_parallel_rows if parallel else parse_rows)(kind, table, positions, options)
    try:
        for chunk, position in batches:
            for number, values, record in chunk:
                summary.rows += 1
                if not isinstance(record, str):
                    key = writer.batch_key(record)
                    if key in batch_keys:
                        flush()
                    batch_keys.add(key)
                batch.append((number, values, record))
            flush()
            if progress:
                progress(position, table.size_bytes)
    except HelperDied as exc:
        raise ImportFailed(f"{table.path}: {exc}. {_so_far(summary)}") from None
    finally:
        summary.seconds = time.perf_counter() - started
        summary.touched_customers = writer.touched
        rejects.close()
        if hasattr(batches, "close"):
            batches.close()
        if rejects.used:
            summary.rejects_path = str(rejects_path)
        elif rejects_path.exists():
            rejects_path.unlink()


def _so_far(summary: ImportSummary) -> str:
    """What an interrupted import had written, and that running it again is safe."""
    if not summary.accepted and not summary.rejected:
        return "Nothing was imported; run the import again."
    return (f"Rows up to line {summary.last_row} were handled ({summary.created} created, {summary.updated} "
            f"updated, {summary.unchanged} unchanged, {summary.rejected} rejected); run the import again to "
            "import the rest: rows already imported are matched, not added twice.")


def _cell(values: list[object], index: int) -> object:
    if index >= len(values):
        return ""
    value = values[index]
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else value


def _record_run(engine: Engine, summary: ImportSummary, started_at, error: str | None = None) -> None:
    """Add the run to ``import_runs``: ``finished``, or ``failed`` with the error (cut to the column's size)."""
    row = {name: getattr(summary, name) for name in ("rows", "accepted", "created", "updated", "unchanged",
                                                      "rejected")}
    columns = ImportRun.__table__.c
    row.update(kind=summary.kind[:columns.kind.type.length], path=printable(summary.path)[:columns.path.type.length],
               rejects_path=summary.rejects_path and summary.rejects_path[:columns.rejects_path.type.length],
               status="failed" if error is not None else "finished",
               error=error and printable(error)[:columns.error.type.length])
    with write_tx(engine) as conn:
        conn.execute(insert(ImportRun.__table__).values(started_at=started_at, finished_at=utcnow(), **row))


