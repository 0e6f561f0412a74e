"""The `scrape:` section: where images come from and how they are fetched."""

from __future__ import annotations

from typing import Annotated, Literal

import soupsieve
from pydantic import Field, model_validator

from imgclf.core.params import Number, Section, StageParams, Text, fail


# Yandex Images filters and the values its search URL takes (empty: no filter).
class SearchFilters(Section):
    size: Literal["", "large", "medium", "small"]
    orientation: Literal["", "horizontal", "vertical", "square"]
    type: Literal["", "photo", "clipart", "lineart", "face", "demotivator"]


class SiteParams(Section):
    """A catalogue site: a list page linking one page per class, each holding image links."""
    url: Text           # the list page; empty: the site is not used
    class_links: Text   # CSS selector of the list page's links to class pages (text = class name)
    images: Text        # CSS selector of a class page's images (<img src> or <a href>)

    @model_validator(mode="after")
    def _check(self) -> SiteParams:
        if not self.url:
            return self
        if not self.url.startswith(("http://", "https://")):
            fail("url", "an http(s) URL", self.url)
        for name in ("class_links", "images"):
            _check_selector(name, getattr(self, name))
        return self


def _check_selector(key: str, selector: str) -> None:
    if not selector:
        fail(key, "a CSS selector when the url is set", selector)
    # soupsieve is BeautifulSoup's CSS engine: a selector it cannot compile would fail mid-run.
    try:
        soupsieve.compile(selector)
    except soupsieve.SelectorSyntaxError as error:
        problem = str(error).splitlines()[0]  # the rest draws the selector with a caret
        fail(key, f"a CSS selector ({problem})", selector)


Seconds = Annotated[Number, Field(gt=0, description="a number of seconds > 0")]


class ScrapeParams(Section):
    source: Literal["yandex", "web", "folder"]
    folder: Text
    archive_max_entries: int = Field(ge=1)
    archive_max_bytes: int = Field(ge=1)
    search_url: Text
    per_class: int = Field(gt=0)
    similar_from: int = Field(ge=0)
    similar_per_result: int = Field(ge=0)
    filters: SearchFilters
    catalogue: SiteParams
    shop: SiteParams
    workers: int = Field(ge=1)
    timeout: Seconds
    file_timeout: Seconds
    retries: int = Field(ge=0)
    backoff: Number = Field(ge=0)
    host_delay: Number = Field(ge=0)
    max_bytes: int = Field(ge=1024)
    page_timeout: Seconds
    render_wait: Seconds
    local_only: bool
    allow_private: bool

    @model_validator(mode="after")
    def _check(self) -> ScrapeParams:
        if not self.search_url.startswith(("http://", "https://")):
            fail("search_url", "an http(s) URL", self.search_url)
        if self.source == "folder" and not self.folder:
            fail("folder", "a directory or .zip file when scrape.source is folder", self.folder)
        if self.source == "web" and not (self.catalogue.url or self.shop.url):
            fail("catalogue.url", "a list-page URL (or scrape.shop.url) when scrape.source is "
                 "web", self.catalogue.url)
        if self.file_timeout < self.timeout:
            fail("file_timeout", f"a number of seconds >= scrape.timeout ({self.timeout:g})",
                 self.file_timeout)
        return self


class ScrapeStageParams(StageParams):
    """What the scrape stage reads: the class list and its section."""
    classes: Text
    scrape: ScrapeParams

    @model_validator(mode="after")
    def _check(self) -> ScrapeStageParams:
        check_class_list(self.classes, self.scrape)
        return self


def check_class_list(classes: str, scrape: ScrapeParams) -> None:
    """Only the folder source can take its classes from the images (one folder per class)."""
    if not classes and scrape.source != "folder":
        fail("classes", "a class-list CSV path (it may be empty only with scrape.source: "
             "folder)", classes)
