"""Headless Chromium for the browser tests (gallery, induction report): one place for the driver set-up.

Selenium runs the system chromedriver through an explicit path, so Selenium Manager never runs and
nothing is downloaded. Tests skip cleanly where chromium or chromedriver is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                       reason="headless browser tests need chromium and chromedriver (Debian packages chromium, chromium-driver)"),
]


def chromium_driver(tmp_path_factory: pytest.TempPathFactory, width: int = 1280, height: int = 900) -> Iterator:
    """A headless Chromium driver with its own profile folder; quit when the generator closes."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()
