"""The `yandex` source: Yandex Images search results, read through headless Chromium.

For each class, the search page for its query (with `scrape.filters`) is scrolled down in steps,
as a reader would, and its "more" button pressed, until `scrape.per_class` result URLs or the end
of the results. The browser loads the thumbnails (they are small): a result page that gives them
no size in its markup lays out only when they load, and before that its loader never sees the
reader reach the end. Before each step the source lets the page settle (the results and the
page's height still, no thumbnail loading), so that it scrolls the page a person would see.
Then the "similar images" pages of the first `scrape.similar_from` results add up to
`scrape.similar_per_result` each. A URL counts once per class: one already found on the search
page or on another "similar" page is skipped, not counted. A captcha or an empty result page ends
the class with a problem that the stage reports; the run goes on with the next class. Before the
browser starts, one connection to the search host tells whether it can be reached at all, so that
an offline run fails in seconds rather than class by class.

Yandex changes its markup every few years. Everything this module knows about it is in the block
below (`LAYOUTS`, the captcha markers and `parse_results`); the rest only scrolls and clicks.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import urllib.parse
from typing import Callable, Iterator

from bs4 import BeautifulSoup, Tag
from selenium.webdriver.common.by import By

from imgclf.config.scrape import ScrapeParams
from imgclf.core.classes import ClassSpec
from imgclf.core.errors import StageError
from imgclf.sources.browser import Browser
from imgclf.sources.http.credentials import redact
from imgclf.sources.http.download import PageProblem, UrlSource
from imgclf.sources.http.guard import DEFAULT_PORTS, BlockedAddress

# ---- The markup: the one place that knows how Yandex's pages look. ------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """One known version of the result page."""
    name: str
    items: str                                   # CSS selector: one element per result
    original_url: Callable[[Tag], str | None]    # the full-size image's URL in such an element
    more_button: tuple[str, str]                 # Selenium locator of the "more results" button


def _img_href_of_data_bem(item: Tag) -> str | None:
    """`<div class="serp-item" data-bem='{"serp-item": {"img_href": URL, ...}}'>`."""
    try:
        data = json.loads(str(item.get("data-bem", "")))
    except ValueError:
        return None
    entry = data.get("serp-item") if isinstance(data, dict) else None
    url = entry.get("img_href") if isinstance(entry, dict) else None
    return url if isinstance(url, str) else None


def _img_url_of_href(item: Tag) -> str | None:
    """`<a class="ImagesContentImage-Cover" href="/images/search?...&img_url=URL&...">`."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(str(item.get("href", ""))).query)
    return query["img_url"][0] if query.get("img_url") else None


LAYOUTS = (
    # The layout the original project read (until about 2023).
    Layout("serp-item", "div.serp-item[data-bem]", _img_href_of_data_bem,
           (By.CSS_SELECTOR, "div.more a.button2")),
    # 2024-25: thumbnails (img.ImagesContentImage-Image) are Yandex's own small copies; the
    # original's URL is in the cover link. The button says "Показать ещё" ('е' or 'ё').
    Layout("ImagesContentImage", "a.ImagesContentImage-Cover", _img_url_of_href,
           (By.XPATH, "//*[self::button or self::a]"
                      "[contains(normalize-space(.), 'Показать ещ')]")),
)
ANY_RESULT = ", ".join(layout.items for layout in LAYOUTS)
# Yandex sends suspected robots to /showcaptcha, a checkbox or a picture puzzle.
CAPTCHA_URL_PART = "/showcaptcha"
CAPTCHA_MARKERS = "form[action*='captcha'], .CheckboxCaptcha, .AdvancedCaptcha"


def parse_results(html: str) -> list[str]:
    """The original-image URLs on a result page, in page order, whichever layout it has."""
    soup = BeautifulSoup(html, "lxml")
    return [url for layout in LAYOUTS for item in soup.select(layout.items)
            if (url := layout.original_url(item))]


# ---- Searching. ---------------------------------------------------------------------------------


def page_url(base: str, **params: str) -> str:
    """`base` with query parameters added; empty values are left out."""
    parts = urllib.parse.urlsplit(base)
    query = urllib.parse.parse_qsl(parts.query) + [(k, v) for k, v in params.items() if v]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# One scroll step: most of a window, as a reader moves on; true once the end of the page shows.
SCROLL_STEP = ("window.scrollBy(0, Math.round(window.innerHeight * 0.8));"
               "return window.innerHeight + window.scrollY"
               " >= document.documentElement.scrollHeight - 2;")
MAX_SCROLL_STEPS = 100  # per attempt to load more: a page that never ends does not hold us
# A page is settled when nothing changed for this long: longer than the gap between a script's
# steps (adding a batch, then its thumbnails arriving), short against a search's seconds.
QUIET_SECONDS = 0.2
OFFLINE_HINT = ("without the internet, collect from a folder of images instead: "
                "scrape.source: folder and scrape.folder: a <root>/<class>/<image> tree or a .zip "
                "of one (see README)")


class YandexSource(UrlSource):
    def __init__(self, scrape: ScrapeParams) -> None:
        super().__init__(scrape)
        self.browser = Browser(scrape.page_timeout, scrape.local_only, self.downloader.guard,
                               load_images=True)

    def check_ready(self) -> None:
        problem = self._unreachable()
        if problem:
            raise StageError(redact(f"scrape.search_url: {problem}"))

    def _unreachable(self) -> str | None:
        """Why the search host cannot be reached (one connection through the guard), or None."""
        parts = urllib.parse.urlsplit(self.scrape.search_url)
        host = parts.hostname or ""
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:  # not a number, or out of range
            return f"an http(s) URL with a valid port (got {self.scrape.search_url!r})"
        try:
            self.downloader.guard.connect(host, port, self.scrape.timeout).close()
        except BlockedAddress as blocked:
            return str(blocked)
        except socket.gaierror:
            return f"{host} does not resolve; {OFFLINE_HINT}"
        except OSError as error:
            why = error.strerror or str(error) or type(error).__name__
            return f"cannot connect to {host}:{port} ({why}); {OFFLINE_HINT}"
        return None

    def search_url(self, query: str) -> str:
        filters = self.scrape.filters
        return page_url(self.scrape.search_url, text=query, isize=filters.size,
                        iorient=filters.orientation, type=filters.type)

    def similar_url(self, image_url: str) -> str:
        return page_url(self.scrape.search_url, rpt="imageview", url=image_url)

    def find_urls(self, spec: ClassSpec) -> Iterator[str]:
        search = self.search_url(spec.query)
        seen: set[str] = set()  # every URL found for the class so far: none counts twice
        first: list[str] = []
        for url in self._results(search, self.scrape.per_class, seen):
            first.append(url)
            yield url
        if not first:
            raise PageProblem(f"no results for {spec.query!r} ({search})")
        for url in first[:self.scrape.similar_from]:
            yield from self._results(self.similar_url(url), self.scrape.similar_per_result, seen)

    def _results(self, url: str, limit: int, seen: set[str]) -> Iterator[str]:
        """Up to `limit` result URLs of the page at `url` that are not in `seen` (and adds them
        to it), loading more until the end."""
        if limit == 0:
            return
        taken = 0
        with self.browser.failures(url):
            self.browser.load(url)
            self.browser.wait_for(ANY_RESULT, self.scrape.render_wait)  # scripts add results
            while True:
                # Read and scroll the page as laid out (a limit for pages that never stop).
                self.browser.settle(ANY_RESULT, QUIET_SECONDS, self.scrape.page_timeout)
                self.browser.leave_if_refused(url)  # its scripts may have navigated
                self._check_captcha(url, taken)
                fresh = [u for u in dict.fromkeys(parse_results(self.browser.driver.page_source))
                         if u not in seen][:limit - taken]
                seen.update(fresh)
                taken += len(fresh)
                yield from fresh
                if taken >= limit or not self._load_more():
                    return

    def _check_captcha(self, url: str, results: int) -> None:
        driver = self.browser.driver
        if CAPTCHA_URL_PART in driver.current_url or driver.find_elements(By.CSS_SELECTOR,
                                                                          CAPTCHA_MARKERS):
            raise PageProblem(f"captcha: Yandex asks to prove a human is searching (after "
                              f"{results} results of {url}); run again later for this class")

    def _load_more(self) -> bool:
        """Scroll to the end, and press "more" if scrolling brought nothing; False at the end."""
        driver = self.browser.driver
        count = len(driver.find_elements(By.CSS_SELECTOR, ANY_RESULT))
        self._scroll_to_end()
        if self.browser.wait_for(ANY_RESULT, self.scrape.render_wait, more_than=count):
            return True
        buttons = [button for layout in LAYOUTS for button in
                   driver.find_elements(*layout.more_button) if button.is_displayed()]
        if not buttons:
            return False
        driver.execute_script("arguments[0].click();", buttons[0])  # a JS click: never covered
        return self.browser.wait_for(ANY_RESULT, self.scrape.render_wait, more_than=count)

    def _scroll_to_end(self) -> None:
        """Scroll down in steps of most of a window: each is a real scroll (the page's loader
        may listen for scroll events, or watch for its last results to come into view), and
        results it adds lengthen the page, so the steps go on to the new end."""
        self.browser.make_scrollable()
        for _ in range(MAX_SCROLL_STEPS):
            if self.browser.driver.execute_script(SCROLL_STEP):
                return

    def close(self) -> None:
        self.browser.close()
        super().close()
