"""The demo builds a base for every MISSION.md scenario through the real importer."""

from sqlalchemy import select

from crm.db import make_engine
from crm.models import Customer, ServiceEvent
from crm.persons import duplicate_groups
from tests.helpers import run_json


def test_demo_builds_every_scenario_and_rejects_only_the_dirty_rows(tmp_path):
    result = run_json("demo", "--customers", "60", "--dir", tmp_path / "demo", "--base-only")
    imports = result["imports"]
    assert imports["customers"]["rejected"] == 4       # bad phone, bad email, no id, future birthday
    assert imports["purchases"]["rejected"] == 3       # unknown customer, 31 February, quantity in words
    assert imports["events"]["rejected"] == 1          # "не помню" is not a date
    assert imports["consents"]["rejected"] == 0
    assert result["base"]["customers"] == 63 and result["base"]["managers"] == 3
    assert all(count == 10 for name, count in result["scenarios"].items() if name != "customer_g_records")

    engine = make_engine(result["database_url"])
    groups = duplicate_groups(engine)
    assert [g.external_ids for g in groups] == [["ISP-G1", "ISP-G2", "ISP-G3"]]
    with engine.connect() as conn:
        kinds = set(conn.execute(select(ServiceEvent.__table__.c.kind)).scalars())
        g = conn.execute(select(Customer.__table__).where(Customer.__table__.c.external_id == "ISP-G1")).one()
    assert {"haircut", "car_service", "trip"} <= kinds
    assert g.attributes["football_stream_price"] == 55 and g.attributes["children"] == 2
    engine.dispose()

    again = run_json("demo", "--customers", "60", "--dir", tmp_path / "demo", "--base-only")
    assert again["base"] == result["base"]


def test_demo_runs_the_campaigns_and_customer_g_gets_one_call(tmp_path, monkeypatch):
    result = run_json("demo", "--customers", "120", "--dir", tmp_path / "demo")
    runs = {summary["campaign"]: summary for summary in result["campaigns"]}
    assert set(runs) >= {"business_cards_refill", "haircut_followup", "isp_tv_package_ivanova", "winback"}
    emails = sorted((tmp_path / "demo" / "outbox" / "email").glob("*.eml"))
    sent_by_email = sum(s["channels"].get("email", {}).get("sent", 0) for s in result["campaigns"])
    assert sent_by_email and len(emails) == sent_by_email        # the local SMTP server received each one
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in emails[0].read_bytes()
    engine = make_engine(result["database_url"])
    from crm.ledger.history import history

    g = history(engine, customer="ISP-G2", campaign=None)
    isp = [row for row in g if row["offer"] == "isp_tv_package"]
    assert [row["status"] for row in isp].count("sent") == 1 and len(isp) == 3
    assert {row["reason"] for row in isp if row["status"] == "skipped"} == {"cooling_down"}
    with engine.connect() as conn:
        from crm.models import CallTask

        tasks = conn.execute(select(CallTask.__table__.c.script).where(
            CallTask.__table__.c.offer == "isp_tv_package")).scalars().all()
    engine.dispose()
    assert any("трансляции футбола" in script for script in tasks)
    assert sum(result["call_tasks"].values()) == len(tasks) + sum(
        runs[n]["channels"].get("call", {}).get("sent", 0) for n in ("haircut_followup", "car_service_call"))
