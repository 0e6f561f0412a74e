"""Headless Chromium through Selenium 4, for pages that JavaScript builds (Yandex, shops).

It is Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them). Selenium gets
the driver's path and SE_OFFLINE, so Selenium Manager never tries to download a driver. The
browser starts on first use; after it fails it is thrown away and the next page starts a fresh
one, so a crashed tab costs one class, not the run.

It opens only http(s) pages on hosts the address guard allows, checked before it navigates and
again where it ended after redirects. Chromium resolves names itself, so these are checks, not
the pinned connections of the downloader; it loads no pictures, and the image URLs it finds are
fetched by the downloader, which checks every connection.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from imgclf.core.errors import StageError
from imgclf.sources.http.download import PageProblem
from imgclf.sources.http.guard import AddressGuard

CHROMIUM = Path("/usr/bin/chromium")
# A common desktop size: result pages lay out and load (on scroll) as they do for people.
WINDOW = (1920, 1080)
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# These work as root inside a container or a sandboxed CI machine.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         f"--window-size={WINDOW[0]},{WINDOW[1]}")
# Tests: every host name but 127.0.0.1 fails to resolve, so nothing leaves the machine.
LOCAL_ONLY_FLAG = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
# Image URLs are read from the markup: loading thumbnails would only cost time and bandwidth.
PREFERENCES = {"profile.managed_default_content_settings.images": 2}
POLL_SECONDS = 0.05
# The page's HTTP status, which WebDriver does not expose (0 where the browser does not say).
HTTP_STATUS_SCRIPT = ("const entry = performance.getEntriesByType('navigation')[0];"
                      "return entry && entry.responseStatus ? entry.responseStatus : 0;")


class Browser:
    def __init__(self, page_timeout: float, local_only: bool, guard: AddressGuard) -> None:
        self._page_timeout = page_timeout
        self._local_only = local_only
        self._guard = guard
        self._window_changed = False
        self._driver: WebDriver | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def driver(self) -> WebDriver:
        if self._driver is None:
            self._driver = self._start()
        return self._driver

    def _start(self) -> WebDriver:
        missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
        if missing:
            raise StageError(f"the browser is not installed ({', '.join(missing)} missing): run "
                             "scripts/setup.sh, or apt-get install chromium chromium-driver")
        os.environ["SE_OFFLINE"] = "true"
        # Chromium leaves its profile and a socket folder in TMPDIR after every run; give it a
        # folder of its own, removed on close.
        self._scratch = tempfile.TemporaryDirectory(prefix="imgclf-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS + ((LOCAL_ONLY_FLAG,) if self._local_only else ()):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._scratch.name}/profile")
        options.add_experimental_option("prefs", PREFERENCES)
        service = Service(executable_path=str(CHROMEDRIVER),
                          env={**os.environ, "TMPDIR": self._scratch.name})
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except WebDriverException as error:
            self._remove_scratch()
            raise StageError(f"the browser does not start: {error.msg}") from None
        driver.set_page_load_timeout(self._page_timeout)
        return driver

    @contextlib.contextmanager
    def failures(self, url: str) -> Iterator[None]:
        """Turn the browser's failures on `url` into a PageProblem; a broken browser is dropped."""
        try:
            yield
        except TimeoutException:
            raise PageProblem(f"page did not load within {self._page_timeout:g} s: {url}") from None
        except WebDriverException as error:
            self.close()
            message = (error.msg or type(error).__name__).splitlines()[0]
            raise PageProblem(f"browser failed on {url}: {message}") from None

    def load(self, url: str) -> WebDriver:
        """Open `url` (an http(s) page on an allowed host) in a window of the usual size."""
        self._refuse(url)
        with self.failures(url):
            if self._window_changed:
                self.driver.set_window_size(*WINDOW)
                self._window_changed = False
            self.driver.get(url)
            self.leave_if_refused(url)
        return self.driver

    def _refuse(self, url: str) -> None:
        refusal = self._guard.url_refusal(url)
        if refusal:
            raise PageProblem(f"{url}: {refusal}")

    def leave_if_refused(self, opened: str) -> None:
        """After a redirect or a script moved the window away from `opened`: check where it is
        now, and leave a refused page for about:blank (which stops its scripts) unread."""
        now = self.driver.current_url
        if now == opened:
            return
        try:
            self._refuse(now)
        except PageProblem:
            self.driver.get("about:blank")
            raise

    def make_scrollable(self) -> None:
        """Make the window shorter than the page if the page fits in it, so that it can scroll:
        a loader that waits for scroll events never fires on a page that cannot scroll. The
        next `load` restores the usual size. (Call it inside `failures`.)"""
        inner, outer, page = self.driver.execute_script(
            "return [window.innerHeight, window.outerHeight,"
            " document.documentElement.scrollHeight];")
        if page > inner:
            return
        self.driver.set_window_size(WINDOW[0], outer - inner + page // 2)
        self._window_changed = True

    def wait_for(self, selector: str, seconds: float, more_than: int = 0) -> bool:
        """Wait until more than `more_than` elements match `selector`; False after `seconds`."""
        def enough(driver: WebDriver) -> bool:
            return len(driver.find_elements(By.CSS_SELECTOR, selector)) > more_than
        try:
            WebDriverWait(self.driver, seconds, poll_frequency=POLL_SECONDS).until(enough)
        except TimeoutException:
            return False
        return True

    def rendered(self, url: str, selector: str, seconds: float) -> tuple[str, str]:
        """Load `url`, give its scripts up to `seconds` to add an element matching `selector`,
        and return the final URL and the page's HTML (with or without such elements)."""
        with self.failures(url):
            self.load(url)
            status = self.driver.execute_script(HTTP_STATUS_SCRIPT)
            if status >= 400:  # an error page would otherwise read as a page without matches
                raise PageProblem(f"{url}: http {status}")
            self.wait_for(selector, seconds)
            self.leave_if_refused(url)  # its scripts may have navigated since it loaded
            return self.driver.current_url, self.driver.page_source

    def close(self) -> None:
        self._window_changed = False  # a new browser starts with the usual size
        if self._driver is not None:
            driver, self._driver = self._driver, None
            with contextlib.suppress(WebDriverException):
                driver.quit()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            scratch, self._scratch = self._scratch, None
            scratch.cleanup()
