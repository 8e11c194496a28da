"""The demo builds a base for every MISSION.md scenario through the real importer."""

from sqlalchemy import select

from crm.db import make_engine
from crm.models import Customer, ServiceEvent
from crm.persons import duplicate_groups
from tests.helpers import run_json


def test_demo_builds_every_scenario_and_rejects_only_the_dirty_rows(tmp_path):
    result = run_json("demo", "--customers", "60", "--dir", tmp_path / "demo")
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

    again = run_json("demo", "--customers", "60", "--dir", tmp_path / "demo")
    assert again["base"] == result["base"]
