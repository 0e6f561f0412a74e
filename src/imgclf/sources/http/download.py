"""Downloading images from the web, shared by the `yandex` and `web` sources.

`UrlSource` is what both sources share: a source only finds image URLs for a class on its pages
(`find_urls`); skipping what earlier runs tried, downloading on a bounded thread pool and making
one manifest record per URL happen here.

`Downloader` treats the web as hostile: only http(s) URLs; connections only to addresses the
guard allows, checked again on every redirect hop (`guard.py`, `transport.py`); a timeout on
every socket operation and one deadline for each whole file, headers included; retries with
backoff only where a retry can help (connection errors and HTTP 5xx, never 4xx); a polite delay
between requests to one host; a byte limit enforced while the body streams in. A file is kept
only when its status is 200 and it decodes completely as an image within a pixel limit;
everything else is recorded with the reason it was rejected. Credentials in URLs are redacted in
every record (`credentials.py`).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence

import requests
import urllib3
from tqdm import tqdm

from imgclf.config.scrape import ScrapeParams
from imgclf.core.classes import ClassSpec
from imgclf.core.images import IMAGE_SUFFIXES, ImageError, decode
from imgclf.sources.base import SKIPPED, ClassReport, RawRecord, RawStore, Source
from imgclf.sources.http.credentials import redact, redact_url
from imgclf.sources.http.guard import AddressGuard, BlockedAddress, scheme_refusal
from imgclf.sources.http.transport import DeadlineExceeded, Fetch, new_session

CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 5  # more is a loop, or a chain that no image host needs
# Named honestly, but "Mozilla/5.0 (compatible; ...)" keeps hosts that refuse bare clients happy.
USER_AGENT = "Mozilla/5.0 (compatible; imgclf-scraper/0.1)"


class Rejected(Exception):
    """A URL whose content is not kept. The message is the manifest's reason, `<kind>: <detail>`
    (the summary counts rejections by kind)."""

    def __init__(self, reason: str, http_status: int = 0, data: bytes = b"") -> None:
        super().__init__(reason)
        self.http_status = http_status
        self.data = data  # what arrived before the rejection: the manifest's bytes and hash


class PageProblem(Exception):
    """A page gave no (more) image URLs for a class: a captcha, no results, a failed load."""


@dataclasses.dataclass(frozen=True)
class Fetched:
    url: str  # after redirects: the base of a page's relative links
    content_type: str
    data: bytes


class HostThrottle:
    """Spaces the starts of requests to one host at least `delay` seconds apart, across threads.
    (The clock and the sleep are parameters so that tests can run it on a fake clock.)"""

    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._delay = delay
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_start: dict[str, float] = {}

    def wait(self, url: str) -> None:
        host = urllib.parse.urlsplit(url).netloc
        with self._lock:  # reserve a slot, then sleep outside the lock so other hosts go on
            now = self._clock()
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self._delay
        self._sleep(start - now)


def _failure_reason(error: requests.RequestException, timeout: float) -> str:
    """A short, stable reason for a failed request (no addresses or object ids in it)."""
    # requests wraps urllib3's error in MaxRetryError once retries are used up.
    inner = error.args[0] if error.args else error
    cause = getattr(inner, "reason", inner)
    # Before the timeouts: urllib3 derives NewConnectionError (a refused connection, a name that
    # does not resolve) from ConnectTimeoutError.
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return f"connection error: {type(cause).__name__}"
    if isinstance(error, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError):
        return f"timeout: no response within {timeout:g} s"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "truncated: the connection closed before the whole body arrived"
    if isinstance(error, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                          requests.exceptions.MissingSchema)):
        return f"bad url: {type(error).__name__}"
    return f"connection error: {type(cause).__name__}"


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


def image_suffix(fetched: Fetched) -> str:
    """The suffix to store `fetched` under, when it decodes fully as an image; else Rejected."""
    try:
        return IMAGE_SUFFIXES[decode(fetched.data).format]
    except ImageError as error:
        if _looks_like_html(fetched.data):
            raise Rejected(f"html page: served as {fetched.content_type or 'no type'}") from None
        raise Rejected(str(error)) from None


class Downloader:
    """Fetches URLs within the limits of `scrape.*`, on a pool of `scrape.workers` threads."""

    def __init__(self, scrape: ScrapeParams) -> None:
        self._scrape = scrape
        self._throttle = HostThrottle(scrape.host_delay)
        self.guard = AddressGuard(scrape.allow_private)
        self._pool = ThreadPoolExecutor(max_workers=scrape.workers,
                                        thread_name_prefix="download")
        # requests does not promise that a Session is thread-safe: one per worker thread.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = new_session(self._scrape.retries, self._scrape.backoff)
            self._local.session.headers["User-Agent"] = USER_AGENT
            with self._sessions_lock:
                self._sessions.append(self._local.session)
        return self._local.session

    def fetch(self, url: str) -> Fetched:
        """GET `url`: the body of a 200 response within the limits, or Rejected with why not."""
        refusal = scheme_refusal(url)
        if refusal:
            raise Rejected(refusal)
        self._throttle.wait(url)
        with Fetch(self.guard, self._scrape.file_timeout) as fetch:
            try:
                with self._follow(url) as response:
                    if response.status_code != 200:
                        raise Rejected(f"http {response.status_code}: {response.reason}",
                                       response.status_code)
                    data = self._read_body(response, fetch)
                    return Fetched(response.url, response.headers.get("Content-Type", ""), data)
            except BlockedAddress as blocked:
                raise Rejected(str(blocked)) from None
            except (requests.RequestException, DeadlineExceeded) as error:
                if fetch.expired or isinstance(error, DeadlineExceeded):
                    raise self._too_slow(0, b"") from None
                raise Rejected(_failure_reason(error, self._scrape.timeout)) from None

    def _follow(self, url: str) -> requests.Response:
        """The response at the end of `url`'s redirects, each hop a new, checked request. (Not
        requests' own redirects: they read each redirect's body whole, however long it is.)"""
        session = self._session()
        for _ in range(MAX_REDIRECTS + 1):
            response = session.get(url, stream=True, timeout=self._scrape.timeout,
                                   allow_redirects=False)
            if not response.is_redirect:
                return response
            target = urllib.parse.urljoin(response.url, session.get_redirect_target(response))
            response.close()  # unread: the connection is dropped, not drained
            refusal = scheme_refusal(target)
            if refusal:
                raise Rejected(f"{refusal} (a redirect)", response.status_code)
            url = target
        raise Rejected(f"redirect loop: more than {MAX_REDIRECTS} redirects", response.status_code)

    def _too_slow(self, http_status: int, data: bytes) -> Rejected:
        return Rejected(f"too slow: not complete after {self._scrape.file_timeout:g} s "
                        "(scrape.file_timeout)", http_status, data)

    def _read_body(self, response: requests.Response, fetch: Fetch) -> bytes:
        limit = self._scrape.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Rejected(f"too large: Content-Length {declared} > {limit} bytes", 200)
        body = bytearray()
        try:
            # read1 returns what one socket read brings; decoded bytes count, so a gzip bomb
            # hits the limit too.
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                body += chunk
                if len(body) > limit:
                    raise Rejected(f"too large: more than {limit} bytes", 200, bytes(body))
        except urllib3.exceptions.HTTPError as error:  # a stall, IncompleteRead, broken gzip
            if fetch.expired:
                raise self._too_slow(200, bytes(body)) from None
            if isinstance(error, urllib3.exceptions.TimeoutError):
                raise Rejected(f"timeout: the body stalled for {self._scrape.timeout:g} s", 200,
                               bytes(body)) from None
            raise Rejected(f"truncated: {type(error).__name__}", 200, bytes(body)) from None
        if fetch.expired:  # the watchdog's shutdown can read as the end of the body
            raise self._too_slow(200, bytes(body))
        return bytes(body)

    def _download(self, spec: ClassSpec, url: str, store: RawStore) -> RawRecord:
        origin = redact_url(url)  # the manifest is pushed: no credentials in it
        try:
            fetched = self.fetch(url)
        except Rejected as rejected:
            return _rejected(spec, origin, rejected, rejected.http_status, rejected.data)
        try:
            suffix = image_suffix(fetched)
        except Rejected as rejected:
            return _rejected(spec, origin, rejected, 200, fetched.data)
        record = store.save(spec, fetched.data, suffix, origin)
        return dataclasses.replace(record, query=spec.query, http_status=200)

    def download(self, spec: ClassSpec, urls: Sequence[str],
                 store: RawStore) -> Iterator[RawRecord]:
        """Download `urls` for `spec` on the pool; yield each record as soon as it is done."""
        futures = [self._pool.submit(self._download, spec, url, store) for url in urls]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # the consumer stopped early (an error, Ctrl-C): drop what has not started
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for session in self._sessions:
            session.close()


def _rejected(spec: ClassSpec, origin: str, reason: Rejected, http_status: int,
              data: bytes) -> RawRecord:
    return RawRecord(spec.name, origin, sha256=hashlib.sha256(data).hexdigest() if data else "",
                     bytes=len(data), status=SKIPPED, reason=redact(str(reason)),
                     query=spec.query, http_status=http_status)


class UrlSource(Source):
    """A source that finds image URLs on web pages; `find_urls` is the part each one writes."""

    incremental = True  # never download twice: URLs that earlier runs tried are skipped

    def __init__(self, scrape: ScrapeParams) -> None:
        self.scrape = scrape
        self.downloader = Downloader(scrape)
        self._reports: dict[str, ClassReport] = {}

    @abc.abstractmethod
    def find_urls(self, spec: ClassSpec) -> Iterator[str]:
        """Yield image URLs for the class, best first; raise PageProblem when pages fail."""

    def collect(self, spec: ClassSpec, store: RawStore,
                known_origins: set[str]) -> Iterator[RawRecord]:
        with tqdm(desc=spec.name, unit="img", leave=False) as bar:
            urls, problem = self._gather(spec, bar)
            new = [url for url in urls if redact_url(url) not in known_origins]
            self._reports[spec.name] = ClassReport(found=len(urls), known=len(urls) - len(new),
                                                   problem=problem)
            bar.reset(total=len(new))
            for record in self.downloader.download(spec, new, store):
                bar.update()
                yield record

    def _gather(self, spec: ClassSpec, bar: tqdm) -> tuple[list[str], str]:
        """The class's URLs, each once, and what went wrong; URLs found before a problem stay."""
        urls: dict[str, None] = {}  # an ordered set
        try:
            for url in self.find_urls(spec):
                urls.setdefault(url)
                bar.set_postfix(found=len(urls), refresh=False)
        except PageProblem as problem:  # it may name a page's URL: printed and kept
            return list(urls), redact(str(problem))
        return list(urls), "" if urls else "no image URLs found"

    def report(self, class_name: str) -> ClassReport | None:
        return self._reports.get(class_name)

    def close(self) -> None:
        self.downloader.close()
