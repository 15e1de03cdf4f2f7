"""A real headless browser for the tests: Debian's chromium driven by its chromedriver through selenium.

`make test` installs both when they are missing (.ci/install_browser.sh, needs root and apt-get); without them a
browser test fails saying so instead of being skipped.
"""

from __future__ import annotations

import contextlib
import shutil

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _find(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@contextlib.contextmanager
def headless_chromium(width: int = 1400, height: int = 1000):
    """A selenium WebDriver for a headless chromium, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = _find(CHROMIUM), _find(DRIVER)
    if not (binary and driver):
        raise AssertionError(
            "the browser test needs chromium and chromedriver: run `make test` (it installs them as root with "
            "apt-get: .ci/install_browser.sh) or `apt-get install chromium chromium-driver`"
        )
    options = Options()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()
