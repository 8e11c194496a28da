"""Customers' gender and city: imported under their Russian headers, wrong genders rejected with the reason."""

from __future__ import annotations

from sqlalchemy import select

from crm.importing import import_file
from crm.models import Customer
from segments import customer_ids, load_library, resolve
from tests.helpers import read_rejects, write_csv

customers = Customer.__table__


def stored(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {row.external_id: (row.gender, row.city, row.region) for row in
                conn.execute(select(customers.c.external_id, customers.c.gender, customers.c.city,
                                    customers.c.region))}


def test_gender_and_city_import_and_bad_genders_are_rejected_with_their_reason(engine, tmp_path):
    rows = [["F1", "Анна", "ж", "Казань", "Татарстан"], ["F2", "Вера", "Female", "", "Приморский край"],
            ["F3", "Ольга", "жен.", "", ""], ["F4", "Зоя", " F ", "", ""],
            ["M1", "Иван", "м", "Москва", ""], ["M2", "Пётр", "male", "", ""], ["M3", "Олег", "Муж", "", ""],
            ["N1", "Саша", "", "", ""],
            ["X1", "Икс", "x", "", ""], ["X2", "Игрек", "unknown", "", ""], ["X3", "Зет", "мж", "", ""]]
    summary = import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "Пол", "Город",
                                                                              "регион"], rows))
    assert (summary.created, summary.rejected) == (8, 3)
    rejected = read_rejects(tmp_path / "c.csv.rejects.csv")
    assert [r["external_id"] for r in rejected] == ["X1", "X2", "X3"]
    assert all(r["_reason"].startswith("gender ") and "f, m" in r["_reason"] and "leave the cell empty"
               in r["_reason"] for r in rejected)
    assert summary.rejection_reasons == {"gender": 3}
    got = stored(engine)
    assert {k: v[0] for k, v in got.items()} == {"F1": "f", "F2": "f", "F3": "f", "F4": "f", "M1": "m", "M2": "m",
                                                 "M3": "m", "N1": None}
    assert got["F1"][1:] == ("Казань", "Татарстан") and got["F2"][1:] == (None, "Приморский край")
    # a file without the columns keeps them; a blank cell clears them
    import_file(engine, "customers", write_csv(tmp_path / "d.csv", ["external_id", "name"], [["F1", "Анна Б."]]))
    assert stored(engine)["F1"][:2] == ("f", "Казань")
    import_file(engine, "customers", write_csv(tmp_path / "e.csv", ["external_id", "пол", "city"], [["F1", "", ""]]))
    assert stored(engine)["F1"][:2] == (None, None)


def test_segments_select_by_gender_and_city(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "gender", "city"],
                                               [["A", "f", "Казань"], ["B", "m", "Казань"], ["C", "f", ""]]))
    library = load_library()

    def selected(rule):
        ids = [cid for page in customer_ids(engine, resolve(rule, library), library=library) for cid in page]
        with engine.connect() as conn:
            return set(conn.execute(select(customers.c.external_id).where(customers.c.id.in_(ids))).scalars())

    assert selected({"all": [{"field": "gender", "equals": "f"}, {"field": "city", "equals": "Казань"}]}) == {"A"}
    assert selected({"field": "city", "exists": False}) == {"C"}


def test_erasing_a_customer_removes_their_gender_and_city(engine, tmp_path):
    from crm.privacy import erase

    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "gender", "city", "region"],
                                               [["E1", "ж", "Казань", "Татарстан"]]))
    erase(engine, "E1")
    assert list(stored(engine).values()) == [(None, None, None)]
