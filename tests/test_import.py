"""Import through the CLI: encodings, delimiters, bad rows, re-import, mapping, exit codes, both databases."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from openpyxl import Workbook
from sqlalchemy import select

from crm.models import Consent, ContactPoint, Customer, Manager, Purchase, ServiceEvent
from tests.helpers import read_rejects, run_cli, run_json, write_csv

CUSTOMER_HEADER = ["external_id", "name", "birthday", "region", "manager", "email", "phone", "attr.tv",
                   "attr.years_customer"]
CUSTOMERS = [
    ["C1", "Иванов Иван", "15.03.1980", "Москва", "petrov", "Ivan@Mail.RU", "8 (916) 123-45-67", "no", "5"],
    ["C2", "Петрова Анна", "1990-07-01", "Москва", "ivanova", "anna@yandex.ru", "+7 926 000 11 22", "yes", "1,5"],
    ["C3", "Сидоров Олег", "", "Татарстан", "", "", "", "", ""],
]


def _customers(engine):
    with engine.connect() as conn:
        return {row.external_id: row for row in conn.execute(select(Customer.__table__))}


def _contacts(engine):
    with engine.connect() as conn:
        return sorted((row.customer_id, row.kind, row.value, row.status)
                      for row in conn.execute(select(ContactPoint.__table__)))


def test_cp1251_semicolon_russian_headers_are_read(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "clients.csv",
                     ["Код клиента", "ФИО", "Дата рождения", "Регион", "Телефон", "E-mail"],
                     [["К-1", "Ёлкина Мария", "01.02.1985", "Москва", "8 916 123 45 67", "masha@mail.ru"]],
                     encoding="cp1251", delimiter=";")
    summary = run_json("import", "customers", path)
    assert (summary["accepted"], summary["created"], summary["rejected"]) == (1, 1, 0)
    assert summary["encoding"] == "cp1251" and summary["delimiter"] == ";"
    customer = _customers(engine)["К-1"]
    assert customer.name == "Ёлкина Мария" and customer.birthday == date(1985, 2, 1)
    assert [c[1:3] for c in _contacts(engine)] == [("email", "masha@mail.ru"), ("phone", "+79161234567")]


def test_utf8_bom_comma_and_attributes_typed(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS, encoding="utf-8-sig")
    summary = run_json("import", "customers", path)
    assert summary["encoding"] == "utf-8-sig"
    assert (summary["rows"], summary["accepted"], summary["created"], summary["rejected"]) == (3, 3, 3, 0)
    customers = _customers(engine)
    assert customers["C1"].attributes == {"tv": "no", "years_customer": 5}
    assert customers["C2"].attributes == {"tv": "yes", "years_customer": 1.5}
    assert customers["C3"].attributes == {} and customers["C3"].birthday is None
    with engine.connect() as conn:
        managers = dict(conn.execute(select(Manager.__table__.c.code, Manager.__table__.c.id)).all())
    assert set(managers) == {"petrov", "ivanova"}
    assert customers["C1"].manager_id == managers["petrov"]


def test_reimport_changes_nothing_and_updates_are_counted(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS)
    run_json("import", "customers", path)
    before_customers, before_contacts = _customers(engine), _contacts(engine)
    again = run_json("import", "customers", path)
    assert (again["accepted"], again["created"], again["updated"], again["unchanged"]) == (3, 0, 0, 3)
    assert _customers(engine) == before_customers and _contacts(engine) == before_contacts

    changed = [row[:] for row in CUSTOMERS]
    changed[0][6] = "+7 903 555 44 33"  # new phone
    changed[1][3] = "Санкт-Петербург"   # moved
    third = run_json("import", "customers", write_csv(tmp_path / "c2.csv", CUSTOMER_HEADER, changed))
    assert (third["created"], third["updated"], third["unchanged"]) == (0, 2, 1)
    customers = _customers(engine)
    assert customers["C2"].region == "Санкт-Петербург"
    phones = {(v, s) for cid, kind, v, s in _contacts(engine) if cid == customers["C1"].id and kind == "phone"}
    assert phones == {("+79161234567", "superseded"), ("+79035554433", "active")}


def test_partial_file_leaves_other_columns_and_attributes_alone(engine, cli_env, tmp_path):
    run_json("import", "customers", write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS))
    run_json("import", "customers", write_csv(tmp_path / "p.csv", ["external_id", "attr.tv", "attr.pets"],
                                              [["C1", "yes", "cat"]]))
    customer = _customers(engine)["C1"]
    assert customer.name == "Иванов Иван" and customer.region == "Москва"
    assert customer.attributes == {"tv": "yes", "years_customer": 5, "pets": "cat"}


def test_bad_rows_are_rejected_verbatim_and_the_good_ones_kept(engine, cli_env, tmp_path):
    rows = CUSTOMERS + [
        ["B1", "Плохой Телефон", "", "", "", "", "12345", "", ""],
        ["B2", "Плохая Почта", "", "", "", "inna@", "", "", ""],
        ["", "Без Кода", "", "", "", "", "", "", ""],
        ["B3", "Кривая Дата", "31.02.1990", "", "", "", "", "", ""],
    ]
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, rows, delimiter=";")
    result = run_cli("import", "customers", path, "--json")
    assert result.exit_code == 3
    rejects = read_rejects(tmp_path / "c.csv.rejects.csv")
    assert [(r["_row"], r["external_id"]) for r in rejects] == [("5", "B1"), ("6", "B2"), ("7", ""), ("8", "B3")]
    assert "phone '12345'" in rejects[0]["_reason"]
    assert "email 'inna@'" in rejects[1]["_reason"]
    assert "external_id is empty" in rejects[2]["_reason"]
    assert "date '31.02.1990'" in rejects[3]["_reason"]
    assert rejects[0]["name"] == "Плохой Телефон" and rejects[1]["email"] == "inna@"
    assert set(_customers(engine)) == {"C1", "C2", "C3"}


def test_fixed_rejects_file_imports_as_it_is(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, [["B1", "Плохой Телефон", "", "", "", "", "12345", "", ""]])
    assert run_cli("import", "customers", path).exit_code == 3
    rejects_path = tmp_path / "c.csv.rejects.csv"
    rejects_path.write_text(rejects_path.read_text(encoding="utf-8-sig").replace(",12345,", ",+79161234567,"),
                            encoding="utf-8-sig")
    summary = run_json("import", "customers", rejects_path, "--rejects", tmp_path / "again.csv")
    assert (summary["created"], summary["rejected"]) == (1, 0)
    assert not (tmp_path / "again.csv").exists()


def test_unknown_columns_are_fatal_and_map_fixes_them(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", ["Client Code", "Tel", "Notes"], [["X1", "89161234567", "vip"]])
    result = run_cli("import", "customers", path)
    assert result.exit_code == 1
    assert "'Client Code'" in result.output and "--map" in result.output
    summary = run_json("import", "customers", path, "--map", "Client Code=external_id,Tel=phone,Notes=attr.notes")
    assert summary["created"] == 1
    assert _customers(engine)["X1"].attributes == {"notes": "vip"}


def test_unreadable_and_missing_files_are_fatal(engine, cli_env, tmp_path):
    assert run_cli("import", "customers", tmp_path / "nope.csv").exit_code == 1
    (tmp_path / "empty.csv").write_text("")
    result = run_cli("import", "customers", tmp_path / "empty.csv")
    assert result.exit_code == 1 and "empty" in result.output
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    assert run_cli("import", "customers", tmp_path / "broken.xlsx").exit_code == 1


def test_default_region_option_reads_local_numbers(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", ["external_id", "phone"], [["UK1", "020 7946 0958"]])
    assert run_cli("import", "customers", path).exit_code == 3
    summary = run_json("import", "customers", path, "--default-region", "GB")
    assert summary["created"] == 1
    assert _contacts(engine)[0][2] == "+442079460958"


def test_same_person_in_several_records_is_listed_as_duplicates(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", ["external_id", "name", "phone", "email"], [
        ["G1", "Григорьев", "8 (916) 555-12-34", "g@mail.ru"],
        ["G2", "Григорьев Г.", "", "G@Mail.ru "],
        ["G3", "Григорьев Геннадий", "+7 916 555 12 34", ""],
        ["Z1", "Другой", "+7 916 000 00 01", "z@mail.ru"],
    ])
    run_json("import", "customers", path)
    data = run_json("customers", "duplicates")
    assert data["count"] == 1
    group = data["groups"][0]
    assert group["external_ids"] == ["G1", "G2", "G3"]
    assert set(group["shared"]) == {"email:g@mail.ru", "phone:+79165551234"}


def _seed_customers(tmp_path):
    run_json("import", "customers", write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS))


def test_purchases_decimal_comma_unknown_customer_and_idempotence(engine, cli_env, tmp_path):
    _seed_customers(tmp_path)
    header = ["customer", "date", "product", "category", "quantity", "amount", "order_id"]
    rows = [
        ["C1", "10.01.2024", "Визитки 1000 шт", "business_cards", "1000", "1 600,00", "O-1"],
        ["C1", "2024-03-01", "Визитки 500 шт", "business_cards", "500", "800,5", ""],
        ["C1", "2024-03-01", "Визитки 500 шт", "business_cards", "500", "800,5", ""],
        ["NOPE", "2024-03-01", "Визитки", "", "1", "10", ""],
        ["C2", "2024-03-01", "Визитки", "", "0", "10", ""],
    ]
    path = write_csv(tmp_path / "p.csv", header, rows, delimiter=";")
    first = run_json("import", "purchases", path, expect=3)
    assert (first["created"], first["rejected"]) == (3, 2)
    reasons = [r["_reason"] for r in read_rejects(tmp_path / "p.csv.rejects.csv")]
    assert "'NOPE' is not in the base" in reasons[0] and "quantity" in reasons[1]
    second = run_json("import", "purchases", path, expect=3)
    assert (second["created"], second["unchanged"]) == (0, 3)
    with engine.connect() as conn:
        lines = conn.execute(select(Purchase.__table__).order_by(Purchase.__table__.c.id)).all()
    assert len(lines) == 3
    assert lines[0].amount == Decimal("1600.00") and lines[0].quantity == Decimal(1000)
    assert lines[1].amount == Decimal("800.50") and lines[0].currency == "RUB"


def test_events_from_xlsx_with_excel_dates(engine, cli_env, tmp_path):
    _seed_customers(tmp_path)
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Код клиента", "Дата визита", "Услуга", "attr.master"])
    sheet.append(["C1", date(2024, 5, 1), "Haircut", "Ольга"])
    sheet.append(["C1", "01.06.2024", "haircut", "Ольга"])
    sheet.append(["C2", "вчера", "haircut", ""])
    workbook.save(tmp_path / "visits.xlsx")
    summary = run_json("import", "events", tmp_path / "visits.xlsx", expect=3)
    assert (summary["created"], summary["rejected"]) == (2, 1)
    assert read_rejects(tmp_path / "visits.xlsx.rejects.csv")[0]["_row"] == "4"
    with engine.connect() as conn:
        events = conn.execute(select(ServiceEvent.__table__).order_by(ServiceEvent.__table__.c.occurred_on)).all()
    assert [(e.kind, e.occurred_on, e.attributes) for e in events] == [
        ("haircut", date(2024, 5, 1), {"master": "Ольга"}), ("haircut", date(2024, 6, 1), {"master": "Ольга"})]
    assert run_json("import", "events", tmp_path / "visits.xlsx", expect=3)["unchanged"] == 2


def test_consents_append_to_the_ledger_once(engine, cli_env, tmp_path):
    _seed_customers(tmp_path)
    header = ["customer", "channel", "purpose", "status", "at", "source", "wording"]
    rows = [
        ["C1", "email", "marketing", "granted", "01.02.2024 10:00", "web_form", "privacy-v3"],
        ["C1", "email", "marketing", "revoked", "01.03.2024 09:00", "unsubscribe_link", ""],
        ["C2", "all", "service", "да", "2024-01-01", "", ""],
        ["C2", "fax", "marketing", "granted", "2024-01-01", "", ""],
        ["C2", "sms", "spam", "granted", "2024-01-01", "", ""],
    ]
    path = write_csv(tmp_path / "consents.csv", header, rows)
    first = run_json("import", "consents", path, expect=3)
    assert (first["created"], first["rejected"]) == (3, 2)
    assert run_json("import", "consents", path, expect=3)["created"] == 0
    with engine.connect() as conn:
        ledger = conn.execute(select(Consent.__table__).order_by(Consent.__table__.c.at)).all()
    assert [(c.channel, c.purpose, c.granted, c.source) for c in ledger] == [
        ("all", "service", True, "import:consents.csv"), ("email", "marketing", True, "web_form"),
        ("email", "marketing", False, "unsubscribe_link")]
    assert ledger[1].at.hour == 7  # 10:00 Moscow time is 07:00 UTC


def test_import_run_is_recorded_and_summary_has_the_counts(engine, cli_env, tmp_path):
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS)
    summary = run_json("import", "customers", path)
    assert {"accepted", "updated", "rejected", "created", "unchanged", "rows"} <= set(summary)
    card = run_json("customers", "show", "C1")
    assert card["customer"]["name"] == "Иванов Иван"
    assert {c["kind"] for c in card["contact_points"]} == {"email", "phone"}
    assert run_cli("customers", "show", "NOPE").exit_code == 1


def test_small_batches_give_the_same_result_as_one_batch(engine, cli_env, tmp_path):
    rows = [[f"N{i}", f"Клиент {i}", "", "", f"m{i % 3}", f"c{i}@mail.ru", f"+7916{i:07d}", "", str(i)]
            for i in range(250)]
    rows.append(["N5", "Клиент 5 (повтор)", "", "", "m2", "c5@mail.ru", "+79160000005", "", "5"])
    path = write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, rows)
    summary = run_json("import", "customers", path, "--batch-size", "100")
    assert (summary["rows"], summary["created"], summary["updated"]) == (251, 250, 1)
    customers = _customers(engine)
    assert len(customers) == 250 and customers["N5"].name == "Клиент 5 (повтор)"
    assert len(_contacts(engine)) == 500


def test_parsing_process_and_mixed_batches_attach_contacts_to_the_right_customers(engine, tmp_path):
    """New and existing records in one batch, parsed in the second process: every id read back is right."""
    from crm.importing import ImportOptions, import_file

    first = write_csv(tmp_path / "a.csv", CUSTOMER_HEADER,
                      [[f"E{i}", f"Старый {i}", "", "", "", f"old{i}@mail.ru", "", "", ""] for i in range(0, 40, 2)])
    import_file(engine, "customers", first)
    second = write_csv(tmp_path / "b.csv", CUSTOMER_HEADER,
                       [[f"E{i}", f"Клиент {i}", "", "", "", f"c{i}@mail.ru", f"+7916{i:07d}", "", ""]
                        for i in reversed(range(40))])
    summary = import_file(engine, "customers", second, options=ImportOptions(parallel=True, batch_size=7))
    assert (summary.rows, summary.created, summary.updated, summary.rejected) == (40, 20, 20, 0)
    by_id = {row.id: ext for ext, row in _customers(engine).items()}
    active = {(by_id[cid], kind): value for cid, kind, value, status in _contacts(engine) if status == "active"}
    assert all(active[(f"E{i}", "email")] == f"c{i}@mail.ru" and active[(f"E{i}", "phone")] == f"+7916{i:07d}"
               for i in range(40))
    superseded = {by_id[cid] for cid, kind, _, status in _contacts(engine) if status == "superseded"}
    assert superseded == {f"E{i}" for i in range(0, 40, 2)}
