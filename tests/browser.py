"""Headless Chromium for the page tests: Debian's ``chromium`` and ``chromium-driver`` through selenium.

Nothing is downloaded at run time: the driver and the browser are the Debian packages that
``scripts/setup`` installs, named by path, so selenium's own driver manager is never asked. Screenshots
go to ``test-artifacts/`` at the top of the checkout (a CI run leaves them in its clone); the browser's
console is collected so that a test can fail on any error the page causes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP = (1280, 900)
PHONE = (390, 844)  # a common phone's CSS pixels


def _program(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/lib/chromium:/usr/bin")
        if found:
            return found
    raise AssertionError(
        f"none of {names} is installed: run ./scripts/setup, which installs Debian's chromium and "
        "chromium-driver"
    )


@contextmanager
def chromium(size: tuple[int, int] = DESKTOP, *, mobile: bool = False) -> Iterator[webdriver.Chrome]:
    """A headless Chromium window of ``size`` CSS pixels (``mobile``: a phone's touch and scale)."""
    options = webdriver.ChromeOptions()
    options.binary_location = _program("chromium", "chromium-browser")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(argument)
    if mobile:
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": size[0], "height": size[1], "pixelRatio": 3.0, "touch": True}},
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_program("chromedriver"))
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for a driver online
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console entries of level SEVERE since the last call (failed loads, script errors)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in entries if entry.get("level") == "SEVERE"]


def screenshot(driver: webdriver.Chrome, name: str, *, full_page: bool = True) -> Path:
    """Save the whole page (or what the window shows) as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if not full_page:
        assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
        return path
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    original = driver.get_window_size()
    driver.set_window_size(max(int(width), original["width"]), int(height) + 120)
    try:
        assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    finally:
        driver.set_window_size(original["width"], original["height"])
    return path
