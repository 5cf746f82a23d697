"""The self-care page in a real browser (Debian's Chromium, driven by
Selenium through Debian's chromedriver: nothing downloaded), served by
`divert api` on the session node's portal: a customer signs in, sees its
forwards, adds a busy forward and changes it, a call through the node
takes it, and the customer deletes it.  The page's main views are saved as screenshots
(``DIVERT_SCREENSHOTS=dir`` keeps them there: the README's come from it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CALLER, CARRIER_1, NODE, PBX_G, DivertNode, mobile, numbered
from tests.e2e.net import NET
from tests.e2e.sip import call, callee

API = f"{NET}.1:8188"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def api(node: DivertNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`divert api` on the node's portal, stopped by its PID afterwards."""
    log = tmp_path_factory.mktemp("api") / "api.log"
    command = [str(Path(sys.executable).with_name("divert")), "--portal", node.portal]
    with open(log, "w") as output:
        process = subprocess.Popen(
            [*command, "api", "--listen", API], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{API}/api/openapi.json", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"divert api never answered:\n{log.read_text()}"
                time.sleep(0.2)
        yield f"http://{API}"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "dvt_" not in log.read_text()  # tokens are never logged


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    assert os.access(CHROMIUM, os.X_OK), "no Debian chromium: make deps installs it"
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,860")
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def divert(node: DivertNode, *args: str) -> str:
    """`divert` as the operator runs it; its standard output."""
    command = [str(Path(sys.executable).with_name("divert")), "--portal", node.portal, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_a_customer_adds_and_changes_a_busy_forward_a_call_takes_it_and_it_is_deleted(
    node: DivertNode, workdir: Path, api: str, browser: object
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver: WebDriver = browser  # type: ignore[assignment]
    wait = WebDriverWait(driver, 10)
    pictures = Path(os.environ.get("DIVERT_SCREENSHOTS", workdir))
    pictures.mkdir(parents=True, exist_ok=True)
    number, mobile_47 = numbered(47), mobile(47)

    # sign in: a wrong token is refused on the page, the tenant's works
    driver.get(f"{api}/self-care")
    driver.find_element(By.ID, "token").send_keys("dvt_wrong")
    driver.find_element(By.CSS_SELECTOR, "#sign-in-token button").click()
    wait.until(lambda d: "unknown or revoked" in d.find_element(By.ID, "sign-in-error").text)
    driver.save_screenshot(str(pictures / "sign-in.png"))
    token = divert(node, "token", "add", "--tenant", "gamma").splitlines()[-1]
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-token button").click()
    wait.until(shown.visibility_of_element_located((By.ID, "forwards")))
    assert driver.find_element(By.ID, "who-name").text == "tenant gamma"

    # seed 000's list: the tenant's forwards, and its trunk's emergency forward as its own kind
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#forwards tbody tr")) > 0)
    rows = driver.find_elements(By.CSS_SELECTOR, "#forwards tbody tr")
    kinds = [row.get_attribute("class") for row in rows]
    assert kinds.count("emergency") == 1 and "forward" in kinds
    emergency = driver.find_element(By.CSS_SELECTOR, "#forwards tr.emergency")
    assert "trunk pbx-g-dead" in emergency.text and "trunk-down" in emergency.text
    assert not emergency.find_elements(By.CSS_SELECTOR, "button.delete")  # the trunk's setting

    # add a busy forward to number 47
    Select(driver.find_element(By.ID, "add-owner")).select_by_visible_text(f"{number} (gamma)")
    Select(driver.find_element(By.ID, "add-when")).select_by_visible_text("busy")
    driver.find_element(By.ID, "add-to").send_keys(mobile_47)
    driver.find_element(By.CSS_SELECTOR, "#add-forward button").click()
    row_of = f"//table[@id='forwards']//tr[td[2]='{number}']"
    wait.until(lambda d: d.find_elements(By.XPATH, row_of))
    (added,) = driver.find_elements(By.XPATH, row_of)
    assert "busy" in added.text and mobile_47 in added.text
    driver.save_screenshot(str(pictures / "forwards.png"))

    # change it: the ring number first goes elsewhere, then back
    for target in (mobile(46), mobile_47):
        (added,) = driver.find_elements(By.XPATH, row_of)
        added.find_element(By.CSS_SELECTOR, "button.edit").click()
        wait.until(shown.visibility_of_element_located((By.ID, "edit-to")))
        driver.find_element(By.ID, "edit-to").clear()
        driver.find_element(By.ID, "edit-to").send_keys(target)
        driver.find_element(By.CSS_SELECTOR, "#edit-forward button[type=submit]").click()
        wait.until(
            lambda d, target=target: any(
                target in row.text for row in d.find_elements(By.XPATH, row_of)
            )
        )
        if target == mobile(46):
            assert mobile(46) in divert(node, "forward", "list", "--tenant", "gamma")

    # a bad destination: the CLI's one-line message, on the page
    driver.find_element(By.ID, "add-to").send_keys("reject:99")
    driver.find_element(By.CSS_SELECTOR, "#add-forward button").click()
    wait.until(lambda d: "reject code '99'" in d.find_element(By.ID, "add-error").text)
    driver.find_element(By.ID, "add-to").clear()

    listing = divert(node, "forward", "list", "--tenant", "gamma")
    assert any(
        line.split()[2:5] == [number, "busy", "any"] and mobile_47 in line
        for line in listing.splitlines()
    ), listing

    # the chain a call would take, drawn
    Select(driver.find_element(By.ID, "explain-number")).select_by_value(number)
    driver.find_element(By.ID, "explain-more").click()
    Select(driver.find_element(By.CSS_SELECTOR, "#explain-after select")).select_by_value("busy")
    driver.find_element(By.CSS_SELECTOR, "#explain button[type=submit]").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chain g.step.relay")) == 2)
    steps = driver.find_elements(By.CSS_SELECTOR, "#chain g.step.relay")
    assert "trunk pbx-g" in steps[0].text and mobile_47 in steps[1].text
    driver.execute_script("document.getElementById('explain').scrollIntoView()")
    driver.save_screenshot(str(pictures / "explain.png"))

    # the next call takes it: the PBX is busy, the carrier gets the forward
    pbx = callee(workdir, "pbx", PBX_G, "reply", code=486)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(PBX_G, active=True)
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, number, 200, f"{CALLER}:6420")
    try:
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    finally:
        pbx.stop()
        carrier.stop()
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile_47
    assert "reason=user-busy" in forwarded.header("Diversion")[0]

    # delete it on the page
    (added,) = driver.find_elements(By.XPATH, row_of)
    added.find_element(By.CSS_SELECTOR, "button.delete").click()
    wait.until(shown.alert_is_present())
    driver.switch_to.alert.accept()
    wait.until(lambda d: not d.find_elements(By.XPATH, row_of))
    assert number not in divert(node, "forward", "list", "--tenant", "gamma")

    if "DIVERT_SCREENSHOTS" not in os.environ:
        shutil.rmtree(pictures / "chromium", ignore_errors=True)
    for name in ("sign-in", "forwards", "explain"):
        assert (pictures / f"{name}.png").stat().st_size > 5_000
