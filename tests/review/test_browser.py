"""The review app in a real headless Chromium (Selenium; Debian's ``chromium`` and
``chromium-driver``, which ``make test`` installs when it can): sign in, an exhibit's
candidates, the aligned pair, confirming a lead, the leads page and the audit trail as
that user; what an analyst cannot do; CSRF; signing out. Screenshots of the main pages go
to ``$BALLLINK_SCREENSHOTS`` (default ``build/screenshots``) for the README."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("selenium", reason="browser tests need selenium (pip install -e '.[test]')")

from balllink.database import LeadDatabase
from review_support import USERS

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
DRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ.get("BALLLINK_SCREENSHOTS", ROOT / "build" / "screenshots"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="no Chromium and chromedriver on this machine: `make test` installs Debian's "
        "chromium and chromium-driver with apt-get when it runs as root (or with sudo)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def review_db(plain_review_db):
    """The browser tests run on the database without markup (their screenshots go to the
    README); escaping is tested through HTTP (test_app.py)."""
    return plain_review_db


@pytest.fixture
def server(review_db):
    """The review app of a fresh copy of the review database, served by uvicorn."""
    import uvicorn

    from balllink.review import create_app

    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(review_db), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "the review server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1360,1000", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as exc:  # a broken install: say so rather than fail every test
        pytest.skip(f"Chromium did not start under chromedriver: {exc}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def browser(chrome):
    chrome.delete_all_cookies()
    return chrome


def _sign_in(driver, base: str, name: str, path: str = "/exhibits") -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + path)
    assert "/login" in driver.current_url  # not signed in yet: sent to the sign-in page
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(USERS[name][1])
    driver.find_element(By.ID, "sign-in").click()
    _wait(lambda: "/login" not in driver.current_url, "signing in")
    assert driver.find_element(By.ID, "signed-in").text.startswith(name)


def _wait(cond, what: str, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _images_loaded(driver) -> bool:
    return driver.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )


def _lead(path):
    with LeadDatabase(path, readonly=True) as db:
        return db.leads()[0]


def test_examiner_reviews_and_confirms_a_lead(server, browser, review_db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    lead = _lead(review_db)
    _sign_in(browser, server, "ann", "/leads")
    assert browser.current_url.endswith("/leads")  # back where the sign-in was asked
    _shot(browser, "leads-before")

    browser.get(f"{server}/exhibits")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#exhibits tbody tr")) == 6
    _shot(browser, "exhibits")

    browser.get(f"{server}/exhibits/{lead.a}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#candidates tbody tr")
    assert rows and "lead" in rows[0].text
    _wait(lambda: _images_loaded(browser), "the exhibit's surface")
    _shot(browser, "exhibit-candidates")
    browser.find_element(By.CSS_SELECTOR, f'#candidates a.pair[href$="/{lead.b}"]').click()

    _wait(lambda: "/pairs/" in browser.current_url, "the pair view")
    _wait(lambda: _images_loaded(browser), "the pair's images")
    sizes = browser.execute_script(
        "const u = document.getElementById('under'), o = document.getElementById('over');"
        "return [u.naturalWidth, u.naturalHeight, o.naturalWidth, o.naturalHeight,"
        " document.querySelectorAll('#cells rect.congruent').length]"
    )
    assert sizes[0] > 100 and sizes[:2] == sizes[2:4]  # B posed on A's grid
    assert sizes[4] >= 1  # congruent cells outlined
    slider = browser.find_element(By.ID, "opacity")
    browser.execute_script(
        "arguments[0].value = 80; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    opacity = browser.execute_script(
        "return getComputedStyle(document.getElementById('over')).opacity"
    )
    assert float(opacity) == pytest.approx(0.8)
    browser.execute_script("window.scrollTo(0, 0)")
    _shot(browser, "pair")
    browser.execute_script("document.querySelector('.controls').scrollIntoView()")
    _shot(browser, "pair-aligned")

    Select(browser.find_element(By.ID, "status")).select_by_value("confirmed")
    browser.find_element(By.ID, "note").send_keys("breech-face marks agree; to the microscope")
    browser.find_element(By.ID, "set-status").click()
    alert = _wait(lambda: _alert(browser), "the confirmation dialog")
    alert.accept()
    _wait(lambda: "done=" in browser.current_url, "the saved status")
    assert "confirmed" in browser.find_element(By.ID, "summary").text

    browser.get(f"{server}/leads?status=confirmed")
    row = browser.find_element(By.CSS_SELECTOR, f'#leads tr[data-lead="{lead.id}"]')
    assert "confirmed" in row.text and "ann" in row.text
    _shot(browser, "leads")

    browser.get(f"{server}/audit")
    first = browser.find_element(By.CSS_SELECTOR, "#audit tbody tr")
    assert first.find_element(By.CSS_SELECTOR, ".who").text == "ann"
    assert first.find_element(By.CSS_SELECTOR, ".action").text == "status"
    _shot(browser, "audit")

    browser.get(f"{server}/series")
    assert browser.find_elements(By.CSS_SELECTOR, "section.series circle.place")
    _shot(browser, "series")

    with LeadDatabase(review_db, readonly=True) as db:
        assert db.lead(lead.id).status == "confirmed" and db.lead(lead.id).examiner == "ann"


def _alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


_POST = """
const f = document.createElement('form');
f.method = 'post'; f.action = arguments[0];
for (const [k, v] of Object.entries(arguments[1])) {
  const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v;
  f.appendChild(i);
}
document.body.appendChild(f); f.submit();
"""


def test_analyst_cannot_confirm(server, browser, review_db):
    from selenium.webdriver.common.by import By

    lead = _lead(review_db)
    _sign_in(browser, server, "bob")
    browser.get(f"{server}/pairs/{lead.a}/{lead.b}")
    assert not browser.find_elements(By.ID, "status-form")
    token = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    browser.execute_script(
        _POST, f"/leads/{lead.id}/status", {"status": "confirmed", "csrf_token": token}
    )
    _wait(lambda: "Not allowed" in browser.page_source, "the refusal")
    assert "examiner role" in browser.page_source
    assert _lead(review_db).status == "new"


def test_a_form_without_its_csrf_token_is_refused(server, browser, review_db):
    lead = _lead(review_db)
    _sign_in(browser, server, "ann")
    browser.execute_script(_POST, f"/leads/{lead.id}/status", {"status": "confirmed"})
    _wait(lambda: "Refused" in browser.page_source, "the refusal")
    assert "CSRF" in browser.page_source
    assert _lead(review_db).status == "new"


def test_after_signing_out_pages_redirect_to_sign_in(server, browser):
    from selenium.webdriver.common.by import By

    _sign_in(browser, server, "ann")
    browser.find_element(By.CSS_SELECTOR, "form.who button").click()
    _wait(lambda: "/login" in browser.current_url, "signing out")
    browser.get(f"{server}/leads")
    assert "/login?next=" in browser.current_url
    assert browser.find_elements(By.ID, "sign-in")
