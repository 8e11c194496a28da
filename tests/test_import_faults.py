"""Import faults: bytes that do not decode, values too long to read, Excel formulas without values,
a validation process killed mid-import, failed runs, and persons after a contact-only import.

Every test goes through real files (and, for the helper process, a real SIGKILL) on both databases.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import random
import signal
import threading

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from crm.importing import ImportFailed, ImportOptions, import_file
from crm.importing.csvfile import _QUOTED, _START, ROW_LIMIT, _scan
from crm.models import ContactPoint, Customer, ImportRun, Purchase
from tests.helpers import read_rejects, write_csv

HEADER = "external_id,name,email\r\n"


def _customers(engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {row.external_id: row for row in conn.execute(select(Customer.__table__))}


def _runs(engine) -> list[object]:
    with engine.connect() as conn:
        return conn.execute(select(ImportRun.__table__).order_by(ImportRun.__table__.c.id)).all()


def _rejects_bytes(path) -> list[bytes]:
    return path.read_bytes().removeprefix(b"\xef\xbb\xbf").splitlines()


# 1. encodings: a few bytes that do not decode reject only their rows ------------------------------------------

@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["utf-8", "utf-8-sig"])
def test_utf8_file_with_a_row_pasted_from_cp1251_keeps_utf8_and_rejects_that_row(engine, tmp_path, bom):
    pasted = "Петров Пётр".encode("cp1251")
    path = tmp_path / "clients.csv"
    path.write_bytes(bom + HEADER.encode() + "C1,Иванов Иван,ivan@mail.ru\r\n".encode()
                     + b"C2," + pasted + b",petrov@mail.ru\r\n"
                     + "C3,Ёлкина Мария,masha@mail.ru\r\n".encode())
    summary = import_file(engine, "customers", path)
    assert summary.encoding == ("utf-8-sig" if bom else "utf-8")
    assert (summary.created, summary.rejected) == (2, 1)
    customers = _customers(engine)
    assert set(customers) == {"C1", "C3"}
    assert customers["C1"].name == "Иванов Иван" and customers["C3"].name == "Ёлкина Мария"
    rejects = read_rejects(tmp_path / "clients.csv.rejects.csv", errors="surrogateescape")
    assert [(r["_row"], r["external_id"]) for r in rejects] == [("3", "C2")]
    reason = rejects[0]["_reason"]
    assert reason.startswith("name: bytes ") and "not valid UTF-8" in reason and "CSV UTF-8" in reason
    # the row is kept byte for byte, so nothing of it is lost
    assert pasted in _rejects_bytes(tmp_path / "clients.csv.rejects.csv")[1]


def test_cp1251_file_is_still_cp1251_and_its_undefined_byte_rejects_only_its_row(engine, tmp_path):
    path = tmp_path / "clients.csv"
    rows = ["К-1;ПЁТР Сидоров;", "К-2;Анна Ёлкина;"]  # "РЁ" happens to be a valid UTF-8 sequence
    path.write_bytes(("Код клиента;ФИО;E-mail\r\n" + "\r\n".join(rows) + "\r\n").encode("cp1251")
                     + "К-3;Ольга".encode("cp1251") + b"\x98" + ";\r\n".encode())
    summary = import_file(engine, "customers", path)
    assert summary.encoding == "cp1251"
    assert (summary.created, summary.rejected) == (2, 1)
    assert _customers(engine)["К-1"].name == "ПЁТР Сидоров"
    reason = read_rejects(tmp_path / "clients.csv.rejects.csv", errors="surrogateescape")[0]["_reason"]
    assert reason.startswith("ФИО: bytes 98 are not valid cp1251")


# 2. values too long for csv, rows too long, NUL ----------------------------------------------------------------

def test_value_over_the_csv_field_limit_rejects_its_row_and_the_rest_is_imported(engine, tmp_path):
    huge = "x" * 140_000
    path = tmp_path / "clients.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER)
        fh.write("C1,Первый,c1@mail.ru\r\n")
        fh.write(f"C2,{huge},c2@mail.ru\r\n")  # unquoted, on one line
        fh.write("C3,Третий,c3@mail.ru\r\n")
        # quoted over several lines, with lines inside that look like rows: they must not become rows
        fh.write(f'C4,"Четвёртый\r\nFAKE1,Подделка,fake@mail.ru\r\n{huge}\r\nFAKE2,"" quoted"",x",c4@mail.ru\r\n')
        fh.write('C5,"Пятый, с запятой",c5@mail.ru\r\n')
    summary = import_file(engine, "customers", path)
    assert (summary.created, summary.rejected) == (3, 2)
    assert set(_customers(engine)) == {"C1", "C3", "C5"}
    assert _customers(engine)["C5"].name == "Пятый, с запятой"
    rejects = read_rejects(tmp_path / "clients.csv.rejects.csv")
    assert [r["_row"] for r in rejects] == ["3", "5"]
    assert "longer than 131,072 characters (line 3)" in rejects[0]["_reason"]
    assert "longer than 131,072 characters (lines 5–8)" in rejects[1]["_reason"]
    assert [run.status for run in _runs(engine)] == ["finished"]


def test_where_a_skipped_row_ends_is_where_csv_reader_ends_it():
    """After an error the rest of the row is skipped by following its quotes as csv.reader would."""
    rng = random.Random(12)
    for _ in range(3000):
        text = "".join(rng.choice(['a', ' ', '"', '"', ',', '\n', '\r\n', '\r']) for _ in range(rng.randint(0, 40)))
        reader = csv.reader(io.StringIO(text, newline=""))
        expected = [reader.line_num for _ in reader]
        ends, state = [], _START
        for number, line in enumerate(io.StringIO(text, newline="").readlines(), start=1):
            state = _scan(line, state, ",")
            if state != _QUOTED:
                ends.append(number)
                state = _START
        if state == _QUOTED:
            ends.append(number)  # a quote never closed: the row ends with the file
        assert ends == expected, text


def test_row_over_the_row_limit_is_rejected_even_when_each_value_fits(engine, tmp_path):
    width = 12
    value = "y" * (ROW_LIMIT // (width - 2) + 1)  # under csv's field limit, over the row limit together
    header = ["external_id", "name"] + [f"attr.a{i}" for i in range(width - 2)]
    path = write_csv(tmp_path / "wide.csv", header, [["W1", "Первый"] + [""] * (width - 2),
                                                     ["W2", "Второй"] + [value] * (width - 2),
                                                     ["W3", "Третий"] + ["1"] * (width - 2)])
    summary = import_file(engine, "customers", path)
    assert (summary.created, summary.rejected) == (2, 1)
    assert set(_customers(engine)) == {"W1", "W3"}
    reason = read_rejects(tmp_path / "wide.csv.rejects.csv")[0]["_reason"]
    assert reason.startswith(f"row: the row is longer than {ROW_LIMIT:,} characters (line 3)")


def test_nul_byte_rejects_its_row_and_the_rest_is_imported(engine, tmp_path):
    path = tmp_path / "clients.csv"
    path.write_bytes(HEADER.encode() + "C1,Первый,c1@mail.ru\r\nC2,Вто\x00рой,c2@mail.ru\r\n"
                     "C3,Третий,c3@mail.ru\r\n".encode())
    summary = import_file(engine, "customers", path)
    assert (summary.created, summary.rejected) == (2, 1)
    assert set(_customers(engine)) == {"C1", "C3"}
    reason = read_rejects(tmp_path / "clients.csv.rejects.csv")[0]["_reason"]
    assert reason.startswith("name: holds a NUL character")


# 3. every import is recorded ------------------------------------------------------------------------------------

def test_failed_imports_are_recorded_with_their_error(engine, tmp_path):
    unknown = write_csv(tmp_path / "odd.csv", ["Client Code", "Notes"], [["X1", "vip"]])
    with pytest.raises(ImportFailed, match="unknown column"):
        import_file(engine, "customers", unknown)
    with pytest.raises(ImportFailed, match="no such file"):
        import_file(engine, "purchases", tmp_path / "missing.csv")
    utf16 = tmp_path / "unicode.txt"
    utf16.write_text("external_id\tname\r\nC1\tИван\r\n", encoding="utf-16")
    with pytest.raises(ImportFailed, match="UTF-16"):
        import_file(engine, "customers", utf16)
    good = import_file(engine, "customers", write_csv(tmp_path / "ok.csv", ["external_id"], [["C1"]]))
    runs = _runs(engine)
    assert [(r.kind, r.status) for r in runs] == [("customers", "failed"), ("purchases", "failed"),
                                                  ("customers", "failed"), ("customers", "finished")]
    assert "'Client Code'" in runs[0].error and "--map" in runs[0].error
    assert "missing.csv" in runs[1].error and "UTF-16" in runs[2].error
    assert runs[3].error is None and (runs[3].rows, runs[3].created) == (1, good.created) == (1, 1)


# 4. Excel formulas without a stored value ------------------------------------------------------------------------

def test_formula_without_stored_value_keeps_the_stored_field_or_rejects_a_required_one(engine, tmp_path):
    import_file(engine, "customers", write_csv(
        tmp_path / "base.csv", ["external_id", "name", "region", "phone"],
        [["C1", "Иванов Иван", "Москва", "+7 916 123 45 67"], ["C2", "Петрова Анна", "Казань", ""],
         ["C3", "Сидоров Олег", "Тверь", ""]]))
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["external_id", "name", "region", "phone"])
    sheet.append(["C1", None, "Самара", None])
    sheet["B2"] = "=A2"  # written by a program: a formula and no value stored for it
    sheet["D2"] = '=CONCAT("+7", "9161112233")'
    sheet.append([None, "Петрова Анна", "Казань", ""])
    sheet["A3"] = '=CONCAT("C", "2")'
    sheet.append(["C3", "Сидоров Олег", "#N/A", ""])  # an Excel error value
    workbook.save(tmp_path / "update.xlsx")

    summary = import_file(engine, "customers", tmp_path / "update.xlsx")
    assert (summary.updated, summary.rejected) == (1, 2)
    customers = _customers(engine)
    assert customers["C1"].name == "Иванов Иван" and customers["C1"].region == "Самара"
    assert customers["C3"].region == "Тверь"
    with engine.connect() as conn:
        phones = conn.execute(select(ContactPoint.__table__.c.value, ContactPoint.__table__.c.status)).all()
    assert phones == [("+79161234567", "active")]
    rejects = {r["_row"]: r["_reason"] for r in read_rejects(tmp_path / "update.xlsx.rejects.csv")}
    assert rejects["3"].startswith("external_id (cell A3) is a formula with no value stored")
    assert "open the file in Excel or LibreOffice and save it" in rejects["3"]
    assert rejects["4"].startswith("region: cell C4 holds the Excel error #N/A")


def test_formula_without_stored_value_rejects_a_row_that_adds_a_record(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id"], [["C1"]]))
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["customer", "date", "product", "quantity", "amount"])
    sheet.append(["C1", "01.02.2024", "Визитки", None, "100"])
    sheet["D2"] = "=2*5"  # absent would mean the default quantity of 1: a wrong purchase, not a kept value
    sheet.append(["C1", "02.02.2024", "Буклеты", 3, "300"])
    workbook.save(tmp_path / "purchases.xlsx")
    summary = import_file(engine, "purchases", tmp_path / "purchases.xlsx")
    assert (summary.created, summary.rejected) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(select(Purchase.__table__.c.product)).scalars().all() == ["Буклеты"]
    reason = read_rejects(tmp_path / "purchases.xlsx.rejects.csv")[0]["_reason"]
    assert reason.startswith("quantity (cell D2) is a formula with no value stored")


# 5. the validation process dies: an error naming it, never a hang --------------------------------------------

def test_killed_validation_process_fails_the_import_naming_it_and_a_rerun_completes(engine, tmp_path):
    rows = [[f"K{i:05d}", f"Клиент {i}", f"k{i}@mail.ru"] for i in range(6000)]
    path = write_csv(tmp_path / "big.csv", ["external_id", "name", "email"], rows)
    killed: list[int] = []

    def kill_validation(position: int, size: int) -> None:
        if not killed:
            (child,) = multiprocessing.active_children()
            killed.append(child.pid)
            os.kill(child.pid, signal.SIGKILL)

    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            import_file(engine, "customers", path, options=ImportOptions(parallel=True, batch_size=250),
                        progress=kill_validation)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "import_file still waits for a validation process that was killed"
    error = outcome.get("error")
    assert isinstance(error, ImportFailed), error
    message = str(error)
    assert f"pid {killed[0]}" in message and "SIGKILL" in message and "exit code -9" in message
    assert str(path) in message and "run the import again" in message
    imported = len(_customers(engine))
    assert 250 <= imported < 6000 and f"{imported} created" in message
    run_row = _runs(engine)[-1]
    assert (run_row.status, run_row.created) == ("failed", imported) and f"pid {killed[0]}" in run_row.error

    again = import_file(engine, "customers", path, options=ImportOptions(parallel=True, batch_size=250))
    assert (again.unchanged, again.created, again.rejected) == (imported, 6000 - imported, 0)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ContactPoint.__table__)).scalar_one() == 6000
    assert _runs(engine)[-1].status == "finished"


# 6. persons follow a contact-only import -------------------------------------------------------------------------

def test_import_adding_only_a_shared_email_makes_two_records_one_person(engine, tmp_path):
    first = import_file(engine, "customers", write_csv(
        tmp_path / "a.csv", ["external_id", "name", "email", "phone"],
        [["P1", "Павлов Павел", "pavel@mail.ru", ""], ["P2", "Павлов П.", "", "+7 916 700 00 01"]]))
    assert first.people == 2
    second = import_file(engine, "customers", write_csv(tmp_path / "b.csv", ["external_id", "email"],
                                                        [["P2", "Pavel@Mail.ru"]]))
    customers = _customers(engine)
    assert customers["P1"].person_id == customers["P2"].person_id == customers["P1"].id
    assert (second.updated, second.people) == (1, 1) and second.to_dict()["people"] == 1


def test_value_longer_than_its_column_rejects_its_row_on_every_database(engine, tmp_path):
    """PostgreSQL refuses a value longer than its column, which used to fail the whole batch."""
    path = write_csv(tmp_path / "c.csv", ["external_id", "name", "region", "manager"],
                     [["L1", "Н" * 301, "", ""], ["L2", "Второй", "Р" * 101, ""], ["L3", "Третий", "", "m" * 65],
                      ["L4", "Четвёртый", "Москва", "m1"]])
    summary = import_file(engine, "customers", path)
    assert (summary.created, summary.rejected) == (1, 3) and set(_customers(engine)) == {"L4"}
    reasons = [r["_reason"] for r in read_rejects(tmp_path / "c.csv.rejects.csv")]
    assert reasons == ["name is 301 characters long, more than the 300 the base stores; shorten it",
                       "region is 101 characters long, more than the 100 the base stores; shorten it",
                       "manager is 65 characters long, more than the 64 the base stores; shorten it"]
