"""A real browser for the console tests: Debian's chromium driven by chromedriver through Selenium.

``TOUCHFLOW_TEST_BROWSER=required`` (CI sets it) turns a missing browser into a failure instead of
a skip, as an unreachable PostgreSQL is. Screenshots of every page a test visits are kept in
``TOUCHFLOW_TEST_SCREENSHOTS`` when that is set (the README's pictures come from there).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).is_file()), None) or shutil.which(name)


def _unavailable(reason: str) -> None:
    if os.environ.get("TOUCHFLOW_TEST_BROWSER") == "required":
        pytest.fail(f"TOUCHFLOW_TEST_BROWSER=required but {reason}; install Debian's chromium and chromium-driver "
                    "(`apt-get install chromium chromium-driver`)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless chromium (one per test module: starting one costs about a second)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    binary, driver = _first(CHROMIUM, "chromium"), _first(DRIVER, "chromedriver")
    if not binary or not driver:
        _unavailable("no chromium or chromedriver on this machine")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--lang=ru-RU"):
        options.add_argument(flag)
    instance = webdriver.Chrome(service=Service(driver), options=options)
    instance.implicitly_wait(3)
    try:
        yield instance
    finally:
        instance.quit()


def screenshot(browser, name: str) -> Path | None:
    """Save the current page as NAME.png in TOUCHFLOW_TEST_SCREENSHOTS (if set); return the file."""
    folder = os.environ.get("TOUCHFLOW_TEST_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    return path
