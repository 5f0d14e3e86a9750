"""The rater page in a real browser (headless Chromium against `medsyn vtt serve`): answers by clicking and by
keys, a reload mid-way, the end; every stored answer is the one given. Also the view controls and a bad link.

Needs Chromium and chromedriver at /usr/bin (Debian: apt-get install chromium chromium-driver). Without them
the tests are skipped, or fail when MEDSYN_REQUIRE_BROWSER=1 (CI sets it, so they cannot silently vanish).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vtt_helpers import make_study

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from vtt_load import ServerProcess  # noqa: E402
from vtt_screenshot import CHROMEDRIVER, CHROMIUM, headless_chrome, wait_ready  # noqa: E402

CLASSES = ("cyst", "metastasis", "hemangioma")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One study (3 classes, 12 images), its server and one browser, shared by this module's tests."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = f"no {' or '.join(missing)}: apt-get install chromium chromium-driver"
        if os.environ.get("MEDSYN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MEDSYN_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("vtt_browser")
    store = make_study(root / "study", classes=CLASSES, real_per_class=2, synthetic_per_class=2)
    tokens = store.add_raters(["ann", "bob"], seed=0)
    server = ServerProcess(root / "study", root / "server.log").start()
    driver = None
    try:
        driver = headless_chrome(root / "profile", 1280, 800)
        yield SimpleNamespace(store=store, tokens=tokens, admin=store.new_admin_token(), base=server.base, driver=driver, n=len(store.images()),
                              shots=root / "screenshots", server=server)
    finally:
        if driver is not None:
            driver.quit()
        server.stop()


def order_of(store, name: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        return [r[0] for r in db.execute("SELECT o.image_id FROM rater_order o JOIN raters r ON r.id=o.rater_id "
                                         "WHERE r.name=? ORDER BY o.position", (name,))]


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def press(driver, *keys: str) -> None:
    driver.find_element("tag name", "body").send_keys(*keys)


def click(driver, css: str) -> None:
    driver.find_element("css selector", css).click()


def chosen(driver) -> list[str]:
    return [b.text for b in driver.find_elements("css selector", "button.chosen")]


def answered(store, name: str) -> int:
    return next(p["answered"] for p in store.progress() if p["rater"] == name)


def choice(number: int) -> tuple[bool, int, int | None]:
    """What the test answers for the image numbered ``number``: synthetic, class index, confidence."""
    return number % 4 in (1, 2), number % len(CLASSES), None if number % 3 == 0 else 1 + (2 * number) % 5


def test_a_rater_answers_by_clicks_and_keys_reloads_and_finishes(site):
    driver, shots = site.driver, site.shots
    shots.mkdir(exist_ok=True)
    driver.get(f"{site.base}/r/{site.tokens['ann']}")
    for number in range(1, site.n + 1):
        wait_ready(driver, number)
        assert f"{text(driver, 'number')} / {text(driver, 'total')}" == f"{number} / {site.n}"
        synthetic, cls, confidence = choice(number)
        if number == 3:  # the answer needs the class: R alone only says so, and stores nothing
            press(driver, "r")
            assert "Choose the class first" in text(driver, "hint") and answered(site.store, "ann") == 2
            driver.save_screenshot(str(shots / "class_first.png"))
        if number == 7:  # choices made, then a reload: the same image again, choices cleared, nothing stored
            press(driver, "2", "x")
            assert len(chosen(driver)) == 2
            driver.refresh()
            wait_ready(driver, 7)
            assert chosen(driver) == [] and answered(site.store, "ann") == 6
        if number % 2:  # odd numbers by clicking
            click(driver, f'#classes button[data-class="{cls}"]')
            if confidence is not None:
                click(driver, f'#confidence button[data-confidence="{confidence}"]')
            if number == 1:
                driver.save_screenshot(str(shots / "first.png"))
            click(driver, "#answer-synthetic" if synthetic else "#answer-real")
        else:  # even numbers by keys; a class key pressed twice clears the class
            keys = [str(cls + 1)] + ([str(cls + 1), str(cls + 1)] if number == 4 else [])
            keys += ["zxcvb"[confidence - 1]] if confidence is not None else []
            press(driver, *keys, "s" if synthetic else "r")
    wait_ready(driver)
    assert driver.execute_script("return document.body.dataset.state") == "done"
    assert "Thank you" in text(driver, "done") and f"{site.n} / {site.n}" in driver.find_element("tag name", "header").text
    driver.save_screenshot(str(shots / "done.png"))
    assert site.tokens["ann"] not in driver.page_source  # the page never writes the token or an image id
    assert not any(image in driver.page_source for image in order_of(site.store, "ann"))

    order = order_of(site.store, "ann")
    stored = [(a.image_id, a.says_synthetic, a.class_answer, a.confidence) for a in site.store.answers()
              if a.rater == "ann"]
    assert stored == [(order[n - 1], *choice(n)) for n in range(1, site.n + 1)]
    assert len(list(shots.glob("*.png"))) == 3


CANVAS_VALUES = """
const c = document.getElementById("view");
const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
const seen = new Set();
for (let i = 0; i < d.length; i += 4) seen.add(d[i]);
return Array.from(seen);
"""


def test_window_level_zoom_and_smoothing_change_only_the_view(site):
    driver = site.driver
    driver.get(f"{site.base}/r/{site.tokens['bob']}")
    wait_ready(driver, 1)
    assert len(driver.execute_script(CANVAS_VALUES)) > 20  # 16x16 noise, drawn pixel-exact
    driver.execute_script('const w = document.getElementById("width"); w.value = 1;'
                          'w.dispatchEvent(new Event("input"));')
    assert set(driver.execute_script(CANVAS_VALUES)) <= {0, 255}  # a window 1 grey value wide: a threshold
    assert text(driver, "width-value") == "1"
    driver.save_screenshot(str(site.shots / "window.png"))
    press(driver, "w")
    assert text(driver, "width-value") == "256" and len(driver.execute_script(CANVAS_VALUES)) > 20
    fit = float(text(driver, "zoom-level").lstrip("\u00d7"))
    press(driver, "+")
    assert float(text(driver, "zoom-level").lstrip("\u00d7")) == pytest.approx(1.25 * fit, rel=0.02)
    press(driver, "f", "i")
    assert float(text(driver, "zoom-level").lstrip("\u00d7")) == pytest.approx(fit, rel=0.02)
    assert driver.find_element("id", "smooth").is_selected()
    assert answered(site.store, "bob") == 0 and driver.execute_script("return document.body.dataset.number") == "1"


def test_a_wrong_link_shows_only_that_it_is_not_valid(site):
    driver = site.driver
    driver.get(f"{site.base}/r/{site.tokens['ann']}x")
    assert driver.find_element("tag name", "body").text == "This link is not valid."


def test_the_admin_page_lists_each_raters_progress(site):
    from selenium.webdriver.support.ui import WebDriverWait

    driver = site.driver
    driver.get(f"{site.base}/admin/{site.admin}")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.state") == "ready")
    rows = [r.text for r in driver.find_elements("css selector", "#raters tr")]
    assert rows == [f"{p['rater']} {p['answered']} / {p['total']}" for p in site.store.progress()]
    driver.save_screenshot(str(site.shots / "admin.png"))
    driver.get(f"{site.base}/admin/{site.tokens['ann']}")  # a rater's token is no admin token
    assert driver.find_element("tag name", "body").text == "This link is not valid."
