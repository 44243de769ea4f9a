"""The playground page in a real browser: headless Chromium driven by Selenium against a live server.

The browser is Debian's ``chromium`` and ``chromium-driver`` (``scripts/test`` installs them when it
runs as root). Outside CI a missing browser skips this test; in CI (``CI`` set) it is a failure.
``SEQPRED_SCREENSHOT=PATH`` writes a screenshot of the page after a generation (the README's is
``docs/playground.png``), and ``SEQPRED_PLAYGROUND_RUN=RUN`` serves that run instead of the tiny one.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.serve_helpers import LiveServer, served_run  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium and chromium-driver for the browser test (apt-get install)")
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from seqpred.serve.limits import Limits  # noqa: E402


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def generated(driver) -> str:
    return driver.find_element(By.ID, "generated").text


def test_type_a_prime_generate_watch_it_stream_and_stop(browser, served_run):  # noqa: F811
    live = LiveServer(os.environ.get("SEQPRED_PLAYGROUND_RUN") or served_run, Limits(max_length=10**6))
    try:
        browser.get(live.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "LSTM on torch" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "prime").clear()

        # A long generation: text appears and grows while it streams, then Stop ends it.
        prime = browser.find_element(By.ID, "prime")
        prime.send_keys("The king and the queen")
        length = browser.find_element(By.ID, "length")
        length.clear()
        length.send_keys("1000000")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(generated(d)) > 0)
        first = len(generated(browser))
        wait.until(lambda d: len(generated(d)) > first + 200)  # more keeps arriving
        assert browser.find_element(By.ID, "generate").get_attribute("disabled") == "true"
        live.wait_for(lambda s: s["running_streams"] == 1)
        browser.find_element(By.ID, "stop-button").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "stopped after"))
        live.wait_for(lambda s: s["running_streams"] == 0, timeout=5)  # the server freed the stream
        stopped_at = len(generated(browser))
        time.sleep(0.3)
        assert len(generated(browser)) == stopped_at < 1_000_000
        assert browser.find_element(By.CSS_SELECTOR, "#output .prime").text == "The king and the queen"

        # A seeded generation runs to its end and shows the same text as /generate.
        length.clear()
        length.send_keys("300")
        browser.find_element(By.ID, "seed").send_keys("7")
        browser.find_element(By.ID, "generate").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "done: length"))
        import httpx

        temperature = float(browser.find_element(By.ID, "temperature").get_attribute("value"))
        body = {"prime": "The king and the queen", "length": 300, "seed": 7, "temperature": temperature}
        want = httpx.post(live.url + "/generate", json=body, timeout=30).json()["text"]
        # the page shows the text as the browser renders it: compare without trailing blanks per line
        assert [line.rstrip() for line in generated(browser).splitlines()] == [
            line.rstrip() for line in want.strip("\n").splitlines()
        ]
        screenshot = os.environ.get("SEQPRED_SCREENSHOT")
        if screenshot:
            browser.save_screenshot(screenshot)

        # A bad value is shown as the server's error.
        browser.find_element(By.ID, "prime").send_keys("\u2603")
        browser.find_element(By.ID, "generate").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "error 400"))
    finally:
        live.stop()
