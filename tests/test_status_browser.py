"""The status page as a person sees it, in headless Chromium (tests.browser), after a commissioning
session (tests.statuskit) and during an InfluxDB outage. Screenshots are saved to test-artifacts/."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from exporter.processes import wait_until
from tests.browser import DESKTOP, PHONE, chromium, console_errors, screenshot
from tests.statuskit import (
    FLEET_TOKEN,
    LATE_SERIAL,
    MIDNIGHT_SENSORS,
    NEVER_SEEN_SERIAL,
    SILENT_SERIAL,
    SIMULATED,
    TODAY_IN,
    TODAY_OUT,
    Commissioned,
    midnight_push,
    post,
)


def load(driver: webdriver.Chrome, commissioned: Commissioned) -> None:
    driver.get(f"{commissioned.admin_url}/")
    assert driver.title.startswith("axis-exporter status"), driver.title


def sensor_row(driver: webdriver.Chrome, serial: str) -> str:
    """The visible text of the sensor's row."""
    return str(driver.find_element(By.CSS_SELECTOR, f'tr.sensor[data-serial="{serial}"]').text)


@pytest.fixture
def desktop() -> Iterator[webdriver.Chrome]:
    with chromium(DESKTOP) as driver:
        yield driver


def test_the_page_shows_every_sensor_its_state_and_todays_counts(
    desktop: webdriver.Chrome, commissioned: Commissioned
) -> None:
    load(desktop, commissioned)
    summary = desktop.find_element(By.ID, "summary").text
    assert "1 silent" in summary and "1 late" in summary and "1 not seen since start" in summary, summary
    states = {
        row.get_attribute("data-serial"): row.get_attribute("data-state")
        for row in desktop.find_elements(By.CSS_SELECTOR, "tr.sensor")
    }
    assert states[SILENT_SERIAL] == "silent" and states[LATE_SERIAL] == "late"
    assert states[NEVER_SEEN_SERIAL] == "not seen since start"
    assert all(states[serial] == "receiving" for serial in SIMULATED)
    first = desktop.find_elements(By.CSS_SELECTOR, "tr.sensor")[0].get_attribute("data-serial")
    assert first == SILENT_SERIAL, "the sensor that needs attention comes first"
    for _, serial, name in MIDNIGHT_SENSORS:
        text = sensor_row(desktop, serial)
        assert name in text and f"{TODAY_IN} / {TODAY_OUT}" in text, text
    camera = sensor_row(desktop, SIMULATED[0])
    assert "192.168.1.101" in camera and "127.0.0.1" in camera, "reported and socket address"
    assert "5 min" in camera, "its send interval"
    screenshot(desktop, "status-page-desktop")
    screenshot(desktop, "status-page-window", full_page=False)  # the README's docs/status-page.png
    assert console_errors(desktop) == []


def test_rejected_pushes_can_be_diagnosed_from_the_page(
    desktop: webdriver.Chrome, commissioned: Commissioned
) -> None:
    load(desktop, commissioned)
    pushes = desktop.find_elements(By.CSS_SELECTOR, "#push-table tr.push")
    by_status: dict[str, str] = {}
    for row in pushes:
        by_status.setdefault(str(row.get_attribute("data-status")), row.text)
    assert "missing or wrong API token" in by_status["401"]
    assert f"not allowed to push for serial '{SIMULATED[0]}'" in by_status["403"]
    assert "bad_request" in by_status["400"]
    assert "AXIS_EXPORTER_MAX_BODY_BYTES" in by_status["413"]
    assert "application/json" in by_status["415"]
    settings = desktop.find_element(By.ID, "camera-settings").text
    assert f"{commissioned.url}/push" in settings
    assert commissioned.tls.ca_fingerprint_sha256 in settings
    link = desktop.find_element(By.CSS_SELECTOR, "#ca a")
    assert link.get_attribute("href") == f"{commissioned.admin_url}/ca.pem"
    assert all(secret not in desktop.page_source for secret in commissioned.secrets)
    assert console_errors(desktop) == []


def test_on_a_phone_each_sensor_is_a_block_without_sideways_scrolling(commissioned: Commissioned) -> None:
    with chromium(PHONE, mobile=True) as phone:
        load(phone, commissioned)
        width = phone.execute_script("return window.innerWidth")
        assert width <= PHONE[0]
        overflow = phone.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a phone"
        cut = phone.execute_script(
            "return [...document.querySelectorAll('td .v')]"
            ".filter(v => v.scrollWidth > v.clientWidth + 1).map(v => v.textContent.trim())"
        )
        assert cut == [], f"values wider than their block on a phone: {cut[:5]}"
        header = phone.find_element(By.CSS_SELECTOR, "#sensor-table thead")
        assert not header.is_displayed(), "a phone shows labelled blocks, not a table header"
        cell = phone.find_element(By.CSS_SELECTOR, f'tr.sensor[data-serial="{SILENT_SERIAL}"] td')
        assert cell.size["width"] <= width
        label = phone.execute_script("return getComputedStyle(arguments[0], '::before').content", cell)
        assert label == '"State"', f"each value carries its label on a phone, this one {label!r}"
        assert "silent" in sensor_row(phone, SILENT_SERIAL)
        screenshot(phone, "status-page-phone")
        assert console_errors(phone) == []


def test_during_an_influxdb_outage_the_page_says_so_and_shows_the_rest(
    desktop: webdriver.Chrome, commissioned: Commissioned
) -> None:
    influx = commissioned.influx
    influx.stop_bridge()
    try:
        now_push = midnight_push(
            "America/New_York", SIMULATED[1], "axis-accc8e000002", dt.datetime.now(dt.UTC)
        )
        answer = post(commissioned.url, orjson.dumps(now_push), FLEET_TOKEN, commissioned.tls.ca_cert)
        assert answer.status_code == 503, answer.text

        def reports_the_outage() -> bool:
            load(desktop, commissioned)
            down = desktop.find_elements(By.ID, "influxdb-down")
            return bool(down and desktop.find_elements(By.ID, "counts-message"))

        wait_until(reports_the_outage, 20, "the page to report the outage", interval=1)
        banner = desktop.find_element(By.ID, "influxdb-down").text
        assert influx.url in banner and "not reachable" in banner
        message = desktop.find_element(By.ID, "counts-message").text
        assert "<" not in message and "\n" not in message, f"one line, no HTML: {message!r}"
        assert len(desktop.find_elements(By.CSS_SELECTOR, "tr.sensor")) >= len(SIMULATED) + 2
        newest = desktop.find_elements(By.CSS_SELECTOR, "#push-table tr.push")[0]
        assert newest.get_attribute("data-status") == "503"
        assert "not stored, the device will re-send" in newest.text and "<" not in newest.text
        assert "503" in sensor_row(desktop, SIMULATED[1]), "the camera's row shows its last answer"
        screenshot(desktop, "status-page-influxdb-down")
        assert console_errors(desktop) == []
    finally:
        influx.start_bridge()
    wait_until(
        lambda: commissioned.status()["receiver"]["influxdb_reachable"] is True,
        20,
        "the page to see InfluxDB back",
        interval=0.5,
    )
