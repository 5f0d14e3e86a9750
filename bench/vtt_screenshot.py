"""The rater page's screenshot for the docs (docs/images/vtt_rater.png), from real BreastMNIST-64 test images.

Makes a study of BreastMNIST-64 test images (half of them keyed "synthetic": the page never shows the key,
so the screenshot does not depend on it), starts ``medsyn vtt serve`` on 127.0.0.1, opens the rater link in
headless Chromium, answers a few images, zooms in, chooses a class and a confidence, and saves the page.

    python bench/vtt_screenshot.py --out docs/images/vtt_rater.png

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver).
`headless_chrome` is also what tests/test_vtt_browser.py drives.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from vtt_load import ServerProcess, breastmnist_study  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def headless_chrome(profile: Path, width: int = 1440, height: int = 900):
    """Headless Chromium with a throwaway profile, nothing fetched from the network at start."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # --window-size counts the (invisible) browser frame: set the page's own size instead
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def wait_ready(driver, number: int | None = None, timeout: float = 30.0) -> None:
    """Until the page shows an image ready to answer (its number, when given), or says done."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        state = d.execute_script("return [document.body.dataset.state, document.body.dataset.number]")
        return state[0] == "done" or (state[0] == "ready" and (number is None or state[1] == str(number)))

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(ready)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/vtt_rater.png"))
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        store = breastmnist_study(study, per_class=20)
        token = store.add_raters(["reader"], seed=0)["reader"]
        with ServerProcess(study, Path(tmp) / "server.log") as server:
            driver = headless_chrome(Path(tmp) / "profile", args.width, args.height)
            try:
                driver.get(f"{server.base}/r/{token}")
                body = driver.find_element(By.TAG_NAME, "body")
                for number in range(1, 17):  # a reader part-way through the study
                    wait_ready(driver, number)
                    body.send_keys(str(1 + number % 2), "s" if number % 3 else "r")
                wait_ready(driver, 17)
                body.send_keys("1", "v")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
