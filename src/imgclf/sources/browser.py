"""Headless Chromium through Selenium 4, for pages that JavaScript builds (Yandex, shops).

It is Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them). Selenium gets
the driver's path and SE_OFFLINE, so Selenium Manager never tries to download a driver. The
browser starts on first use; after it fails it is thrown away and the next page starts a fresh
one, so a crashed tab costs one class, not the run.

It opens only http(s) pages on hosts the address guard allows, checked before it navigates and
again where it ended after redirects (so that a refused page is named, and never read). Every
request Chromium makes, for a page or for what the page loads (thumbnails, scripts, frames), goes
through a proxy on 127.0.0.1 that applies the same guard to each connection
(`sources.http.proxy.GuardedProxy`). The image URLs it finds are fetched by the downloader.

Pictures are blocked unless the source asks for them: a page that gives its thumbnails no size
in the markup lays out only when they load, and its own loader (which watches the reader reach
the end) then works as it does for a person. Where the layout does not depend on them (a shop's
product list), blocking them saves the bandwidth.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from imgclf.core.errors import StageError
from imgclf.sources.http.download import PageProblem
from imgclf.sources.http.guard import AddressGuard
from imgclf.sources.http.proxy import GuardedProxy

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
# For sources whose pages lay out the same without pictures: image URLs are read from the
# markup, so loading thumbnails would only cost time and bandwidth.
NO_IMAGES = {"profile.managed_default_content_settings.images": 2}
POLL_SECONDS = 0.05
# What `settle` watches: the matches of a selector, the page's height, and pictures still loading
# where pictures load (a blocked one never completes; nor may a lazy one off screen).
SETTLE_SCRIPT = ("return [document.querySelectorAll(arguments[0]).length,"
                 " document.documentElement.scrollHeight,"
                 " arguments[1] ? Array.prototype.filter.call(document.images, function (image) {"
                 " return !image.complete && image.loading !== 'lazy'; }).length : 0];")

# The page's HTTP status, which WebDriver does not expose (0 where the browser does not say).
HTTP_STATUS_SCRIPT = ("const entry = performance.getEntriesByType('navigation')[0];"
                      "return entry && entry.responseStatus ? entry.responseStatus : 0;")


def proxy_flags(port: int) -> tuple[str, ...]:
    """Chromium's flags to send everything through the proxy at 127.0.0.1:`port`."""
    # `<-loopback>` removes Chromium's implicit bypass of localhost and 127.0.0.1, so that even
    # a page's request to this machine goes through the guard. WebRTC would otherwise send UDP
    # past the proxy (to STUN servers, or a page's chosen address).
    return (f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>",
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp")


class Browser:
    def __init__(self, page_timeout: float, local_only: bool, guard: AddressGuard,
                 load_images: bool = False, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._page_timeout = page_timeout
        self._local_only = local_only
        self._guard = guard
        self._load_images = load_images
        self._clock, self._sleep = clock, sleep  # for `settle`; tests give it a clock of theirs
        self._window_changed = False
        self._driver: WebDriver | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._proxy: GuardedProxy | None = None
        self._received_before = 0  # bytes through the proxies of browsers already closed

    @property
    def bytes_received(self) -> int:
        """Bytes the browser received from servers since this object was made (pages, scripts,
        pictures), over every browser it started."""
        return self._received_before + (self._proxy.received if self._proxy else 0)

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
        self._proxy = GuardedProxy(self._guard, self._page_timeout).start()
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (FLAGS + proxy_flags(self._proxy.port)
                     + ((LOCAL_ONLY_FLAG,) if self._local_only else ())):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._scratch.name}/profile")
        if not self._load_images:
            options.add_experimental_option("prefs", NO_IMAGES)
        service = Service(executable_path=str(CHROMEDRIVER),
                          env={**os.environ, "TMPDIR": self._scratch.name})
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except WebDriverException as error:
            self._release()
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

    def settle(self, selector: str, quiet: float, limit: float) -> int:
        """Wait until the page is still: the number of elements matching `selector` and the
        page's height unchanged for `quiet` seconds, and no picture loading; at most `limit`
        seconds (a page that never stops moving). The number of matches. (Call it inside
        `failures`.)"""
        start = changed = self._clock()
        state: list[int] | None = None
        while True:
            now_state = self.driver.execute_script(SETTLE_SCRIPT, selector, self._load_images)
            now = self._clock()
            if now_state != state or now_state[2]:
                state, changed = now_state, now
            elif now - changed >= quiet:
                return now_state[0]
            if now - start >= limit:
                return now_state[0]
            self._sleep(POLL_SECONDS)

    def rendered(self, url: str, selector: str, seconds: float) -> tuple[str, str]:
        """Load `url`, give its scripts up to `seconds` to add an element matching `selector`,
        and return the final URL and the page's HTML (with or without such elements)."""
        with self.failures(url):
            self.load(url)
            status = self.driver.execute_script(HTTP_STATUS_SCRIPT)
            if status >= 400:  # an error page would otherwise read as a page without matches
                # A script may already have moved the window to a refused host, whose 403 from
                # the proxy is the status read: report the refusal, not the page's status.
                self.leave_if_refused(url)
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
        self._release()

    def _release(self) -> None:
        """Stop the proxy and remove the profile folder: what a browser leaves when it quits."""
        if self._proxy is not None:  # after the browser: it has no more requests to send
            proxy, self._proxy = self._proxy, None
            proxy.close()
            self._received_before += proxy.received
        if self._scratch is not None:
            scratch, self._scratch = self._scratch, None
            scratch.cleanup()
