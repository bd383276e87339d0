"""A headless Chromium for the real-browser tests: the installed browser (Debian's ``chromium``) driven through its
own ``chromedriver`` (Debian's ``chromium-driver``, the same version) by Selenium. Nothing is downloaded: the driver
is given by path and Selenium Manager is kept offline. Without the browser, the driver or Selenium, ``chrome()``
skips the test, saying which is missing and how ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install -y chromium chromium-driver (as .ci/run does when root)"


def _find(names: tuple[str, ...], env: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.path.isfile(os.environ[env]) else None
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


@contextlib.contextmanager
def chrome(width: int = 1400, height: int = 1000) -> Iterator["object"]:
    """A Selenium WebDriver of headless Chromium with the browser console recorded (``get_log('browser')``).

    ``$LESIONLIB_CHROMIUM`` / ``$LESIONLIB_CHROMEDRIVER`` name the binaries when they are not on ``PATH``.
    """
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (it is pinned in requirements/constraints.txt: run make setup)")
    browser = _find(BROWSERS, "LESIONLIB_CHROMIUM")
    if browser is None:
        pytest.skip(f"no Chromium browser on PATH ({', '.join(BROWSERS)}): {INSTALL}")
    driver_path = _find(("chromedriver",), "LESIONLIB_CHROMEDRIVER")
    if driver_path is None:
        pytest.skip(f"no chromedriver on PATH for {browser}: {INSTALL}")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: "object") -> list[str]:
    """The browser console's errors (level SEVERE) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
