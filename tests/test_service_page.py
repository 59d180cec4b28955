"""The page at GET /, in a real headless Chromium (Debian's, driven by Selenium) against a real
server: the seed job checked as it loads, a problem shown at its line and column as it is typed,
Run filling the table, the graph and the explanation (English, then Indonesian), a batch job
watched to its end, a token sent from the token field, and a screenshot of the seed's numbers
(`make page-screenshot` keeps it as docs/page.png, the one the README shows).

`make browser` installs chromium and chromium-driver (apt-get, as root); without them these
tests are skipped, with that reason.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"the browser test needs {CHROMIUM} and {CHROMEDRIVER}: `make browser` installs "
                "them (apt-get install chromium chromium-driver, as root)", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: selenium is needed only here)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import test_service  # noqa: E402
from conftest import ROOT  # noqa: E402
from test_service import SEED, yaml_post  # noqa: E402
from servers import running_server  # noqa: E402

server = test_service.server  # one real server for this module too
SCREENSHOT_FOR_README = ROOT / "docs" / "page.png"
WIDTH, HEIGHT = 1200, 900  # the screenshot's size, in CSS pixels
WAIT_S = 30
BAD_JOB = "inputs: {x: 1.0}\ngraph: {y: x +* 2}\noutputs: [y]\n"
TOKEN = "page-test-token-0123456789"
SEED_TABLE = {"a": ["2", "12"], "b": ["3", "8"], "d": ["4", "6"], "c": ["6", "4"], "e": ["24", "1"]}


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="gradsvc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    # the viewport itself (not the window around it) is the screenshot's size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1,
                            "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str):
    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=what)


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def open_page(driver, url: str):
    driver.get(url + "/")
    wait_for(driver, lambda d: "✓ seed-chain" in text_of(d, "check"), "the seed job checked")


def run_job(driver):
    driver.find_element(By.ID, "run").click()
    wait_for(driver, lambda d: "ran seed-chain" in text_of(d, "run-status"), "the run finished")


def table(driver) -> dict[str, list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#table tbody tr")
    return {row.find_element(By.TAG_NAME, "th").text:
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows}


def test_the_page_loads_with_the_seed_job_checked(server, browser):
    open_page(browser, str(server.base_url))
    assert browser.title.startswith("gradsvc")
    assert browser.find_element(By.ID, "job").get_property("value") == SEED
    assert text_of(browser, "check") == "✓ seed-chain: 1 point, outputs e"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []  # no script error, nothing the page's policy refused


def test_a_bad_formula_shows_its_problem_at_its_line_and_column(server, browser):
    open_page(browser, str(server.base_url))
    error = yaml_post(server, "/v1/validate", BAD_JOB).json()["error"]
    editor = browser.find_element(By.ID, "job")
    editor.clear()
    editor.send_keys(BAD_JOB)
    where = f"line {error['line']}:{error['col']}"
    shown = wait_for(browser, lambda d: where in text_of(d, "check") and text_of(d, "check"),
                     f"the problem at {where}")
    assert error["line"] == 2 and error["message"] in shown and "hint: " + error["hint"] in shown


def test_run_shows_the_seed_numbers_the_graph_and_the_explanation(server, browser):
    open_page(browser, str(server.base_url))
    run_job(browser)
    assert table(browser) == SEED_TABLE
    assert "✓ verified against the reference" in text_of(browser, "summary")
    wait_for(browser, lambda d: d.execute_script(
        "return document.getElementById('graph').naturalWidth") > 300, "the graph drawn")
    explained = wait_for(browser, lambda d: "Forward pass" in text_of(d, "explanation") and
                         text_of(d, "explanation"), "the explanation")
    assert "de/da = de/dc · dc/da = 4 · 3 = 12" in explained
    assert "single point: there is nothing to plot over" in text_of(browser, "plot-note")


def test_a_batch_job_is_watched_to_the_end_and_links_its_result(server, browser):
    open_page(browser, str(server.base_url))
    browser.find_element(By.ID, "submit").click()
    state = wait_for(browser, lambda d: "done" in text_of(d, "batch-state") and
                     text_of(d, "batch-state"), "the batch job done")
    assert state.endswith(", done: 1 of 1 point")
    assert browser.find_element(By.ID, "batch-progress").get_property("value") == 1
    link = browser.find_element(By.ID, "batch-result")
    assert link.is_displayed()
    result = server.get(link.get_attribute("href"))
    assert result.status_code == 200 and result.json()["values"]["e"] == 24.0


def test_the_explanation_switches_to_indonesian(server, browser):
    open_page(browser, str(server.base_url))
    run_job(browser)
    wait_for(browser, lambda d: "Forward pass" in text_of(d, "explanation"), "English first")
    browser.find_element(By.ID, "lang-id").click()
    indonesian = wait_for(browser, lambda d: "Perhitungan maju" in text_of(d, "explanation") and
                          text_of(d, "explanation"), "the explanation in Indonesian")
    assert "kenaikan satu nilai dari a akan menaikkan nilai e sebesar 12" in indonesian
    browser.find_element(By.ID, "lang-en").click()
    wait_for(browser, lambda d: "raising a by one unit raises e by 12" in
             text_of(d, "explanation"), "back to English")


def test_the_screenshot_shows_the_seed_graphs_numbers(server, browser, tmp_path, request):
    open_page(browser, str(server.base_url))
    run_job(browser)
    wait_for(browser, lambda d: d.execute_script(
        "return document.getElementById('graph').complete && "
        "document.getElementById('graph').naturalWidth > 0"), "the graph drawn")
    wait_for(browser, lambda d: "Forward pass" in text_of(d, "explanation"), "the explanation")
    # what the screenshot captures: the table in full, inside the viewport, with the seed's numbers
    box = browser.find_element(By.ID, "table").rect
    assert box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT
    assert table(browser) == SEED_TABLE
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot))
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (WIDTH, HEIGHT)
    assert len(png) > 50_000  # text, a table and a picture; a blank page is a few kB
    if request.config.getoption("--keep-page-screenshot"):
        shutil.copyfile(screenshot, SCREENSHOT_FOR_README)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    """A second server, with a token file: every /v1 route needs `Authorization: Bearer`."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.yaml"
    tokens.write_text(f"teacher: {TOKEN}\n")
    with running_server("--token-file", str(tokens)) as url:
        yield url


def test_the_token_field_sends_the_token_and_keeps_it_in_this_tab_only(token_server, browser):
    browser.get(token_server + "/")
    wait_for(browser, lambda d: "Authorization: Bearer" in text_of(d, "check"), "the 401 shown")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    wait_for(browser, lambda d: "✓ seed-chain" in text_of(d, "check"), "checked with the token")
    run_job(browser)
    assert table(browser) == SEED_TABLE
    stored = browser.execute_script("return [sessionStorage.getItem('gradsvc-token'), "
                                    "localStorage.length, document.cookie]")
    assert stored == [TOKEN, 0, ""]
    # a batch job's events and result are fetched with the token; the link is to that copy
    browser.find_element(By.ID, "submit").click()
    link = browser.find_element(By.ID, "batch-result")
    wait_for(browser, lambda d: link.is_displayed(), "the result linked")
    assert link.get_attribute("href").startswith("blob:")
    browser.execute_script("sessionStorage.clear()")
