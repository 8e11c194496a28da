"""Opens and clicks end to end: a campaign's real emails, their links and pixel followed over HTTP, the results.

A campaign runs to the file outbox (the .eml bytes the SMTP channel would send), a real server
(uvicorn) serves the tracking routes, httpx follows what the messages hold. SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from channels.tracking import ForgedToken, tracker_for
from crm.ledger import engagement
from crm.ledger.audit import verify
from crm.models import Customer, Engagement, Touch, TouchEvent
from crm.privacy import erase
from flows import engine as campaign_engine
from flows.spec import CampaignSpec, SpecError, load_spec
from tests.helpers import run_cli, run_json
from tests.servers import free_port, running_app
from tests.test_campaigns import NOON, build_base
from touchflow.server import create_app
from touchflow.settings import Settings, reset_settings

TWILIO = "twilio-auth-token"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
touches, events, engagements = Touch.__table__, TouchEvent.__table__, Engagement.__table__
customers = Customer.__table__

HTML = """<html><body>
<p>Здравствуйте, {{ customer.greeting_name }}!</p>
<p><a href="https://shop.example/sale?d={{ offer.discount_percent }}&amp;src=mail">Скидка {{ offer.discount_percent }}%</a></p>
<p><a class="btn" href='http://shop.example/catalog'>Каталог</a> · <a href="mailto:shop@example.com">Написать</a></p>
<p><img src="https://shop.example/logo.png" alt="logo"></p>
{% if unsubscribe_url %}<p><a href="{{ unsubscribe_url }}">Отписаться</a></p>{% endif %}
</body></html>
"""
TEXT = """Здравствуйте, {{ customer.greeting_name }}!
Скидка {{ offer.discount_percent }}%: https://shop.example/sale?d={{ offer.discount_percent }}&src=mail
{% if unsubscribe_url %}Отписаться: {{ unsubscribe_url }}{% endif %}
"""
SALE, CATALOG = "https://shop.example/sale?d=20&src=mail", "http://shop.example/catalog"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project template with links (HTML and text parts), found through TOUCHFLOW_TEMPLATES_DIR."""
    folder = tmp_path / "templates" / "linked_offer"
    folder.mkdir(parents=True)
    (folder / "email_subject.txt").write_text("Скидка для {{ customer.greeting_name }}", encoding="utf-8")
    (folder / "email.txt").write_text(TEXT, encoding="utf-8")
    (folder / "email.html").write_text(HTML, encoding="utf-8")
    (folder / "sms.txt").write_text("Скидка {{ offer.discount_percent }}% https://shop.example/sale", encoding="utf-8")
    (folder / "meta.yaml").write_text("offer:\n  key: linked\n  discount_percent: 20\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHFLOW_TEMPLATES_DIR", str(tmp_path / "templates"))
    reset_settings()
    return tmp_path


@pytest.fixture
def server(engine, project):
    """The app on a real port; the base URL is the public URL the campaign's links point at."""
    port = free_port()
    app = create_app(engine, Settings(public_url=f"http://127.0.0.1:{port}", twilio_auth_token=TWILIO))
    with running_app(app, port) as base:
        yield base


def spec(**kwargs) -> CampaignSpec:
    values = dict(name="linked", rule={"attribute": "target", "equals": "yes"}, purpose="marketing",
                  offer="linked-1", template="linked_offer", channels=["email", "sms"])
    return CampaignSpec(**(values | kwargs))


def run(engine, the_spec: CampaignSpec, tmp_path: Path, base: str, *, now: datetime | None = NOON) -> list:
    """Run the campaign to the file outbox; its emails as parsed messages (the bytes the SMTP channel would send)."""
    settings = Settings(email_transport="file", sms_transport="memory", outbox_dir=str(tmp_path / the_spec.name),
                        send_attempts=1, min_gap_hours=0, public_url=base)
    r = campaign_engine.start(engine, the_spec, now=now, settings=settings)
    for ids in campaign_engine.segment_pages(r, 50):
        campaign_engine.process_batch(r, ids)
    campaign_engine.finish(r)
    return [email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for path in sorted((tmp_path / the_spec.name / "email").glob("*.eml"))]


def parts(message) -> tuple[str, str]:
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


def links(html: str) -> list[str]:
    return re.findall(r"""<a\b[^>]*\shref=["']([^"']+)["']""", html)


def rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(engagements).order_by(engagements.c.id)).all()


def history_state(engine) -> tuple[list, int]:
    with engine.connect() as conn:
        return (conn.execute(select(touches.c.id, touches.c.status, touches.c.sent_at).order_by(touches.c.id)).all(),
                conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_links_and_pixel_of_real_emails_are_followed_recorded_and_results_summed(engine, server, project):
    build_base(engine, project)
    messages = run(engine, spec(), project, server)
    assert len(messages) == 9  # P05 no consent, P03 the same person as P02, P06 revoked email (gets SMS)
    first = messages[0]
    html, text = parts(first)
    unsubscribe = first["List-Unsubscribe"].strip("<>")
    hrefs = links(html)
    assert hrefs[-1] == unsubscribe and "/unsubscribe/" in unsubscribe      # never rewritten, header and body alike
    assert "mailto:shop@example.com" in hrefs                                 # not http(s): left alone
    tracked = [h for h in hrefs if h.startswith(f"{server}/t/c/")]
    assert len(tracked) == 2 and SALE not in html and CATALOG not in html
    assert 'src="https://shop.example/logo.png"' in html                     # images are not links
    assert SALE in text and unsubscribe in text and "/t/" not in text         # the text part stays as written
    pixels = re.findall(r'<img src="([^"]+/t/o/[^"]+\.gif)"', html)
    assert len(pixels) == 1 and html.index(pixels[0]) < html.index("</body>")
    before = history_state(engine)

    with httpx.Client(headers={"User-Agent": BROWSER}) as client:
        hops = [client.get(link, follow_redirects=False) for link in tracked]
        assert [(h.status_code, h.headers["location"]) for h in hops] == [(302, SALE), (302, CATALOG)]
        gif = client.get(pixels[0])
        assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
        assert gif.content.startswith(b"GIF89a") and "no-store" in gif.headers["cache-control"]
        assert client.get(pixels[0]).status_code == 200                      # a second open, a minute later: collapsed
        client.get(links(parts(messages[1])[0])[0], follow_redirects=False)  # a second person clicks (no pixel)
        client.get(tracked[0], follow_redirects=False, headers={"User-Agent": "Barracuda Sentinel (EE)"})

    recorded = rows(engine)
    assert [(r.kind, r.url, r.client, r.human) for r in recorded] == [
        ("clicked", SALE, "browser", True), ("clicked", CATALOG, "browser", True), ("opened", None, "browser", True),
        ("clicked", SALE, "browser", True), ("clicked", SALE, "scanner", False)]
    assert history_state(engine) == before                                   # no status moved, no event added
    report = verify(engine)
    assert report.intact, report.problems

    summary = engagement.engagement_summary(engine, campaign="linked")["campaigns"]["linked"]
    assert summary["email"] | {"failures": None} == {
        "sent": 9, "delivered": 0, "failed": 0, "unknown": 0, "failures": None, "unique_opens": 2,
        "unique_clicks": 2, "open_rate": round(2 / 9, 4), "click_rate": round(2 / 9, 4), "click_to_open": 1.0,
        "machine_events": 1}
    assert summary["sms"]["sent"] == 1 and "open_rate" not in summary["sms"]  # no rates where nothing is tracked


def test_forged_altered_and_malformed_tokens_record_nothing_and_never_redirect(engine, server, project):
    build_base(engine, project, n=2)
    html, _ = parts(run(engine, spec(), project, server)[0])
    link = next(h for h in links(html) if "/t/c/" in h)
    pixel = re.search(r'<img src="([^"]+/t/o/[^"]+)"', html).group(1)
    token = link.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    touch_id = int(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split(":")[0])
    evil = tracker_for(b"not the installation's key", server).click_token(touch_id, "https://evil.example/")
    swapped = evil.split(".")[0] + "." + signature                        # another target under the real signature
    opened_as_click = pixel.rsplit("/", 1)[1].removesuffix(".gif")        # an open token is no click token
    with httpx.Client() as client:
        for bad, status in ((evil, 403), (swapped, 403), (opened_as_click, 403), (token[:-2], 403),
                            ("garbage", 400), (payload, 400)):
            answer = client.get(f"{server}/t/c/{bad}", follow_redirects=False)
            assert answer.status_code == status and "location" not in answer.headers, bad
            assert "evil.example" not in answer.text
        forged_pixel = client.get(pixel.replace(".gif", "A.gif"))
        assert forged_pixel.status_code == 200 and forged_pixel.content.startswith(b"GIF")
        assert client.get(f"{server}/t/o/{touch_id + 1000}.{signature}.gif").status_code == 200
    assert rows(engine) == []
    assert verify(engine).intact


def test_tracking_switched_off_per_campaign_leaves_the_email_as_written(engine, server, project):
    build_base(engine, project, n=2)
    off = parts(run(engine, spec(name="off", offer="o-1", tracking={"opens": False, "clicks": False}), project,
                    server)[0])[0]
    service = parts(run(engine, spec(name="receipt", offer="r-1", purpose="service", channels=["email"]), project,
                        server)[0])[0]
    opens_only = parts(run(engine, spec(name="opens", offer="p-1", tracking={"clicks": False}), project, server)[0])[0]
    for html in (off, service):
        assert "/t/" not in html and SALE.replace("&", "&amp;") in html and CATALOG in html
    assert "/t/o/" in opens_only and "/t/c/" not in opens_only and CATALOG in opens_only
    assert spec(purpose="service", tracking=True).tracks("clicks") and not spec(tracking=False).tracks("opens")


def test_bad_tracking_values_are_refused_with_the_field_and_the_fix(tmp_path):
    for value, expected in (("{opens: yes-please}", "tracking.opens is 'yes-please': write true or false"),
                            ("{clicks: 1}", "tracking.clicks is 1: write true or false"),
                            ("{open: true}", "tracking.open"),
                            ("sometimes", "write tracking as {opens: true, clicks: false} or true / false")):
        path = tmp_path / "bad.yaml"
        path.write_text("name: bad\npurpose: marketing\noffer: x\ntemplate: winback\nchannels: [email]\n"
                        f"rule: {{attribute: target, equals: 'yes'}}\ntracking: {value}\n", encoding="utf-8")
        with pytest.raises(SpecError) as caught:
            load_spec(path)
        assert str(path) in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_a_click_right_after_sending_is_a_scanners_and_opens_collapse_per_window(engine, server, project):
    build_base(engine, project, n=2)
    html, _ = parts(run(engine, spec(policy={"quiet_hours": "off"}), project, server, now=None)[0])  # sent just now
    link = next(h for h in links(html) if "/t/c/" in h)
    assert httpx.get(link, follow_redirects=False, headers={"User-Agent": BROWSER}).status_code == 302
    assert [(r.kind, r.human) for r in rows(engine)] == [("clicked", False)]  # within 2 s of the hand-over
    touch_id = rows(engine)[0].touch_id
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    window = int(later.timestamp()) // engagement.OPEN_WINDOW * engagement.OPEN_WINDOW
    start = datetime.fromtimestamp(window, timezone.utc)
    assert engagement.record(engine, touch_id, "opened", user_agent=BROWSER, at=start)
    assert not engagement.record(engine, touch_id, "opened", user_agent=BROWSER, at=start + timedelta(seconds=599))
    assert engagement.record(engine, touch_id, "opened", user_agent="GoogleImageProxy", at=start + timedelta(seconds=600))
    assert engagement.record(engine, touch_id, "opened", user_agent="curl/8.5", at=start + timedelta(seconds=30))
    assert [(r.kind, r.client, r.human) for r in rows(engine)][1:] == [
        ("opened", "browser", True), ("opened", "proxy", True), ("opened", "scanner", False)]
    assert engagement.classify(None) == "unknown" and engagement.classify("Googlebot/2.1") == "bot"
    assert verify(engine).intact


def test_delivery_failures_reported_by_twilio_are_in_the_results_and_erasure_clears_urls(engine, server, project,
                                                                                          cli_env):
    build_base(engine, project)
    messages = run(engine, spec(), project, server)
    with engine.connect() as conn:
        sms = conn.execute(select(touches).where(touches.c.channel == "sms")).one()
    form = {"MessageSid": sms.provider_message_id, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    signature = RequestValidator(TWILIO).compute_signature(f"{server}/twilio/status", form)
    assert httpx.post(f"{server}/twilio/status", data=form, headers={"X-Twilio-Signature": signature}).json()["matched"]
    link = next(h for h in links(parts(messages[0])[0]) if "/t/c/" in h)
    httpx.get(link, follow_redirects=False, headers={"User-Agent": BROWSER})

    shown = run_json("campaign", "engagement", "linked")
    assert shown["channels"]["sms"] == {"sent": 0, "delivered": 0, "failed": 1, "unknown": 0,
                                        "failures": {"30003": 1}}
    assert shown["channels"]["email"]["unique_clicks"] == 1 and shown["channels"]["email"]["unique_opens"] == 1
    table = run_cli("campaign", "engagement", "linked")
    assert table.exit_code == 0 and "sms failures: 30003 1" in table.output
    missing = run_cli("campaign", "engagement", "nobody")
    assert missing.exit_code != 0 and "campaign 'nobody' has sent nothing" in missing.output
    assert "in that period" in run_cli("campaign", "engagement", "linked", "--since", "2030-01-01").output

    with engine.connect() as conn:
        external_id = conn.execute(select(customers.c.external_id).join(touches, touches.c.customer_id == customers.c.id)
                                   .where(touches.c.id == rows(engine)[0].touch_id)).scalar_one()
    erase(engine, external_id)
    assert rows(engine)[0].url is None and rows(engine)[0].kind == "clicked"   # the count stays, the URL goes
    assert verify(engine).intact


def test_the_rewrite_takes_anchors_and_areas_in_any_case_and_nothing_else():
    tracker = tracker_for(b"k" * 32, "https://mail.example.com/")
    html = ('<a data-href="https://no.example">x</a><AREA shape=rect HREF="HTTPS://b.example/Q">'
            '<a class="x" href="https://shop.example/a?x=1&amp;y=2">A</a><link href="https://fonts.example/css">'
            '<a href="https://mail.example.com/unsubscribe/T">u</a><a href=\'tel:+7916\'>t</a>')
    out = tracker.rewrite(html, 7)
    tokens = re.findall(r"/t/c/([A-Za-z0-9_\-.]+)", out)
    assert [tracker.verify_click(t).url for t in tokens] == ["HTTPS://b.example/Q", "https://shop.example/a?x=1&y=2"]
    for kept in ('data-href="https://no.example"', 'href="https://fonts.example/css"',
                 'href="https://mail.example.com/unsubscribe/T"', "href='tel:+7916'"):
        assert kept in out
    assert out.endswith('.gif" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">')
    assert tracker.rewrite(out, 7).count("/t/") == out.count("/t/") + 1  # tracked links are not tracked twice
    with pytest.raises(ForgedToken):
        tracker_for(b"other" * 8, "https://mail.example.com").verify_click(tokens[0])
