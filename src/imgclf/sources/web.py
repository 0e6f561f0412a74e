"""The `web` source: catalogue sites whose list page links one page per class.

Two kinds of site, each set by its list page's URL and two CSS selectors: `scrape.catalogue` for
static HTML (fetched with requests, read with BeautifulSoup) and `scrape.shop` for pages that
JavaScript builds (rendered by headless Chromium, then read the same way). A class's page is the
list page's link whose text is the class's name or query, compared without case or extra spaces.
A class gets at most `scrape.per_class` image URLs, the catalogue's first.

A site's URL may name environment variables, `${NAME}`, for credentials that must stay out of
params.yaml. Every link read from a page (class pages, images) goes through the same checks as
the list page before anything is fetched: http(s) only, and only to addresses the guard allows.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Callable, Iterator

from bs4 import BeautifulSoup

from imgclf.config.scrape import ScrapeParams, SiteParams
from imgclf.core.classes import ClassSpec
from imgclf.sources.browser import Browser
from imgclf.sources.http.credentials import expand_env
from imgclf.sources.http.download import PageProblem, Rejected, UrlSource

# (url, selector of what the page should show) -> (final URL, HTML)
PageFetcher = Callable[[str, str], tuple[str, str | bytes]]


@dataclasses.dataclass(frozen=True)
class Site:
    key: str  # its params key, for messages
    params: SiteParams
    url: str  # the list page, with environment variables filled in
    fetch: PageFetcher


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def find_links(html: str | bytes, base: str, selector: str) -> list[tuple[str, str]]:
    """(text, absolute URL) of each element matching `selector`: an `<a href>` or a `<img src>`."""
    links = []
    for element in BeautifulSoup(html, "lxml").select(selector):
        target = element.get("href") if element.name == "a" else element.get("src")
        if target:
            links.append((_normal(element.get_text()), urllib.parse.urljoin(base, str(target))))
    return links


class WebSource(UrlSource):
    def __init__(self, scrape: ScrapeParams) -> None:
        super().__init__(scrape)
        # Chromium starts only for a shop.
        self.browser = Browser(scrape.page_timeout, scrape.local_only, self.downloader.guard)
        sites = (("scrape.catalogue", scrape.catalogue, self._static_page),
                 ("scrape.shop", scrape.shop, self._rendered_page))
        self.sites = [Site(key, params, expand_env(f"{key}.url", params.url), fetch)
                      for key, params, fetch in sites if params.url]
        # Each list page is read once per run: link text -> class page, or why it failed.
        self._class_pages: dict[str, dict[str, str] | PageProblem] = {}

    def _static_page(self, url: str, selector: str) -> tuple[str, bytes]:
        try:
            fetched = self.downloader.fetch(url)
        except Rejected as rejected:
            raise PageProblem(f"{url}: {rejected}") from None
        return fetched.url, fetched.data  # bytes: BeautifulSoup reads the page's own charset

    def _rendered_page(self, url: str, selector: str) -> tuple[str, str]:
        return self.browser.rendered(url, selector, self.scrape.render_wait)

    def find_urls(self, spec: ClassSpec) -> Iterator[str]:
        remaining, problems = self.scrape.per_class, []
        for site in self.sites:
            if remaining == 0:
                break
            try:
                urls = self._image_urls(site, spec)[:remaining]
            except PageProblem as problem:
                problems.append(f"{site.key}: {problem}")
                continue
            remaining -= len(urls)
            yield from urls
        if problems:  # after the other sites' URLs: one site's failure does not cost them
            raise PageProblem("; ".join(problems))

    def _image_urls(self, site: Site, spec: ClassSpec) -> list[str]:
        page = self._class_page(site, spec)
        base, html = site.fetch(page, site.params.images)
        urls = [url for _, url in find_links(html, base, site.params.images)]
        if not urls:
            raise PageProblem(f"nothing matches {site.params.images!r} on {page}")
        return urls

    def _class_page(self, site: Site, spec: ClassSpec) -> str:
        pages = self._list_page(site)
        for key in (_normal(spec.name), _normal(spec.query)):
            if key in pages:
                return pages[key]
        raise PageProblem(f"no link named {spec.name!r} on {site.url}")

    def _list_page(self, site: Site) -> dict[str, str]:
        if site.key not in self._class_pages:
            try:
                self._class_pages[site.key] = self._read_list_page(site)
            except PageProblem as problem:  # kept: every class reports it, none re-fetches
                self._class_pages[site.key] = problem
        pages = self._class_pages[site.key]
        if isinstance(pages, PageProblem):
            raise pages
        return pages

    def _read_list_page(self, site: Site) -> dict[str, str]:
        base, html = site.fetch(site.url, site.params.class_links)
        links = find_links(html, base, site.params.class_links)
        if not links:
            raise PageProblem(f"nothing matches {site.params.class_links!r} on {site.url}")
        return {text: url for text, url in reversed(links)}  # the first link of a name wins

    def close(self) -> None:
        self.browser.close()
        super().close()
