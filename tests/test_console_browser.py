"""Each role's main task in a real Chromium (Debian's, through chromedriver); screenshots for the README.

Runs when a browser is present; CI installs one and sets ``TOUCHFLOW_TEST_BROWSER=required`` so a
missing browser fails instead of skipping. ``TOUCHFLOW_TEST_SCREENSHOTS=DIR`` keeps the pages.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from crm.ledger.access import entries
from crm.models import CallTask
from tests import console_base
from tests.browser import browser, screenshot  # noqa: F401  (the fixture)
from tests.console_base import PASSWORD
from touchflow.server.console.view import today_in
from touchflow.settings import Settings


@pytest.fixture
def site(engine, tmp_path):
    ids, tasks = console_base.build(engine, tmp_path)
    url, stop = console_base.serve(engine, Settings())
    yield console_base.Console(url, ids, tasks)
    stop()


def log_in(browser, url: str, name: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/login")
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 10).until(lambda b: "/login" not in b.current_url)


def test_a_rep_records_a_callback_and_the_call_leaves_todays_queue(browser, site, engine):  # noqa: F811
    log_in(browser, site.url, "anna")
    assert browser.current_url.endswith("/calls")
    task = site.tasks["A1"]
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-task]")
    assert [r.get_attribute("data-task") for r in rows] == [str(task)]   # only her own call
    screenshot(browser, "calls")
    rows[0].find_element(By.TAG_NAME, "a").click()
    assert "Скрипт для A1" in browser.find_element(By.CSS_SELECTOR, "[data-testid=script]").text
    Select(browser.find_element(By.ID, "outcome")).select_by_value("callback")
    tomorrow = today_in(Settings().default_timezone) + timedelta(days=1)  # the business's day, not UTC's
    browser.execute_script("document.getElementById('callback_on').value = arguments[0]", tomorrow.isoformat())
    browser.find_element(By.ID, "note").send_keys("перезвонить после 18:00")
    screenshot(browser, "call")
    browser.find_element(By.ID, "save-outcome").click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith("/calls"))
    assert browser.find_elements(By.CSS_SELECTOR, "[data-task]") == []
    with engine.connect() as conn:
        due = conn.execute(select(CallTask.__table__.c.due_on).where(CallTask.__table__.c.status == "open",
                                                                     CallTask.__table__.c.customer_id == site.ids["A1"])
                           ).scalar()
    assert due == tomorrow


def test_compliance_finds_a_person_opens_the_timeline_and_exports_it(browser, site, engine):  # noqa: F811
    log_in(browser, site.url, "olga")
    browser.find_element(By.ID, "q").send_keys("+7 916 000-00-02")
    browser.find_element(By.ID, "find").click()
    browser.find_element(By.CSS_SELECTOR, "[data-testid=people] a").click()
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=person-name]").text == "Павел Петин"
    kinds = {row.get_attribute("data-kind") for row in browser.find_elements(By.CSS_SELECTOR, "[data-kind]")}
    assert "call_task" in kinds
    screenshot(browser, "timeline")
    browser.find_element(By.ID, "export").click()    # an attachment: the browser downloads it and stays
    for _ in range(50):
        if any(r["action"] == "export" for r in entries(engine)):
            break
        time.sleep(0.1)
    browser.get(f"{site.url}/access-log")
    screenshot(browser, "access-log")
    assert [(r["action"], r["customer_id"]) for r in entries(engine) if r["customer_id"]] == [
        ("timeline", site.ids["P1"]), ("export", site.ids["P1"])]


def test_marketing_previews_a_template_and_starts_a_dry_run_a_rep_is_refused(browser, site):  # noqa: F811
    log_in(browser, site.url, "mark")
    assert browser.current_url.endswith("/dashboard")
    assert browser.find_elements(By.CSS_SELECTOR, "svg[data-chart=stacked]")
    screenshot(browser, "dashboard")
    browser.get(f"{site.url}/templates")
    Select(browser.find_element(By.ID, "template")).select_by_value("cat_food_offer")
    browser.find_element(By.ID, "customer").send_keys("A1")
    browser.find_element(By.ID, "preview").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-testid=part]"))
    channels = [e.get_attribute("data-channel") for e in browser.find_elements(By.CSS_SELECTOR, "[data-testid=part]")]
    assert "email" in channels and "sms" in channels
    screenshot(browser, "template-preview")
    browser.get(f"{site.url}/campaigns/winback")
    browser.find_element(By.ID, "dry-run").click()
    WebDriverWait(browser, 30).until(lambda b: "/runs/" in b.current_url)
    assert browser.find_element(By.ID, "run-status").text == "завершён"
    screenshot(browser, "dry-run")
    browser.get(f"{site.url}/campaigns?lang=en")
    names = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "[data-testid=campaigns] td:first-child")]
    assert "cat_food_thanks" in names and "Campaigns" in browser.find_element(By.TAG_NAME, "h1").text
    log_in(browser, site.url, "anna")
    browser.get(f"{site.url}/dashboard")
    assert browser.find_element(By.TAG_NAME, "h1").text == "403"
