"""Scraping throughput against the local test web (tests/helpers/webfake.py) serving flowers-mini.

1. Download + validate: images per second with 1, 4 and 16 workers, with no added latency and
   with a simulated server latency per photo (what a real image host adds);
2. The browser's share: the yandex source over every class (search, scrolling, "more", similar
   images), time in the browser against time downloading;
3. What loading thumbnails costs: the yandex source's seconds per class in the browser and the
   bytes the browser received (pages and thumbnails, counted by its proxy), with pictures blocked
   and allowed, on result pages whose results have a fixed height (the page lays out the same
   either way) and on pages whose thumbnails have no size until they load (`gallery`: 60 results
   and a similar page of 60).

The server runs in a child process so that it does not share the interpreter lock with the
downloader; it listens on 127.0.0.1, so the settings allow private addresses
(`scrape.allow_private`, as in the tests). Usage:
python benchmarks/bench_scrape.py [--latency 0.05 --repeat 2] [--smoke]
(`--smoke`: 5 photos of 2 classes, 1 and 4 workers, one run, one class in the browser: seconds.)
Thumbnails are served without the added latency (it applies to the photos only).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from imgclf.config.all import AllParams  # noqa: E402
from imgclf.config.scrape import ScrapeParams  # noqa: E402
from imgclf.core.classes import ClassSpec  # noqa: E402
from imgclf.core.params import parse_params  # noqa: E402
from imgclf.sources.base import STORED, RawStore  # noqa: E402
from imgclf.sources.browser import Browser  # noqa: E402
from imgclf.sources.http.download import Downloader  # noqa: E402
from imgclf.sources.yandex import YandexSource  # noqa: E402

from helpers.webfake import FakeWeb, local_settings  # noqa: E402

WORKERS = (1, 4, 16)
SMOKE_WORKERS = (1, 4)
SMOKE_CLASSES, SMOKE_PHOTOS = 2, 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path,
                        default=REPO_ROOT.parent / "shared/datasets/flowers-mini")
    parser.add_argument("--latency", type=float, default=0.05,
                        help="seconds the server waits before each photo in the second series")
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting; the best counts")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that only shows the benchmark works (figures mean little)")
    return parser.parse_args()


def serve(photos: Path, latency: float, ports: multiprocessing.Queue,
          stop: multiprocessing.Event, options: dict[str, Any]) -> None:
    with FakeWeb(photos, **options) as web:
        web.image_delay = latency
        ports.put(web.port)
        stop.wait()


class Server:
    """A FakeWeb serving from a child process; `web` builds its URLs here."""

    def __init__(self, photos: Path, latency: float, **options: Any) -> None:
        # Not started here: it lists the photos and builds URLs.
        self.web = FakeWeb(photos, **options)
        ports: multiprocessing.Queue = multiprocessing.Queue()
        self._stop = multiprocessing.Event()
        self._process = multiprocessing.Process(
            target=serve, args=(photos, latency, ports, self._stop, options))
        self._process.start()
        self.web.port = ports.get(timeout=30)

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)


def scrape_params(web: FakeWeb, **overrides: object) -> ScrapeParams:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["scrape"].update(local_settings(web), timeout=10.0, file_timeout=30.0, **overrides)
    return parse_params(AllParams, raw).scrape


def photo_urls(web: FakeWeb, classes: list[str], photos: int | None) -> dict[str, list[str]]:
    """The URLs of the first `photos` photos (all if None) of each class."""
    return {name: [web.image_url(name, i) for i in range(len(web.photos[name]))][:photos]
            for name in classes}


def images_per_second(web: FakeWeb, urls: dict[str, list[str]], workers: int,
                      repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            downloader = Downloader(scrape_params(web, workers=workers))
            start = time.perf_counter()
            stored = 0
            for name, class_urls in urls.items():
                stored += sum(r.status == STORED for r in downloader.download(
                    ClassSpec(name, 0, name), class_urls, RawStore(Path(folder))))
            best = max(best, stored / (time.perf_counter() - start))
            downloader.close()
    return best


def browser_share(web: FakeWeb, classes: list[str]) -> tuple[float, float, float, int]:
    """Seconds to start the browser, in the browser, downloading; and the images stored."""
    source = YandexSource(scrape_params(web, workers=8, similar_from=2, similar_per_result=3))
    start = time.perf_counter()
    source.browser.driver  # noqa: B018 (start it now, to time the start on its own)
    startup = time.perf_counter() - start
    in_browser = downloading = 0.0
    stored = 0
    with tempfile.TemporaryDirectory() as folder:
        for name in classes:
            spec = ClassSpec(name, 0, name)
            start = time.perf_counter()
            urls = list(dict.fromkeys(source.find_urls(spec)))
            in_browser += time.perf_counter() - start
            start = time.perf_counter()
            stored += sum(r.status == STORED for r in source.downloader.download(
                spec, urls, RawStore(Path(folder))))
            downloading += time.perf_counter() - start
    source.close()
    return startup, in_browser, downloading, stored


def paging_cost(web: FakeWeb, queries: list[str], load_images: bool, repeat: int,
                **overrides: object) -> tuple[float, float, float]:
    """The yandex source's best seconds per class in the browser, URLs found per class and
    kilobytes the browser received per class, with pictures loaded or blocked."""
    best, found, received = float("inf"), 0, 0
    for _ in range(repeat):
        source = YandexSource(scrape_params(web, **overrides))
        # The source always loads pictures; the comparison needs a browser that blocks them.
        source.browser = Browser(source.scrape.page_timeout, source.scrape.local_only,
                                 source.downloader.guard, load_images=load_images)
        source.browser.driver  # noqa: B018 (start it outside the timing)
        before = source.browser.bytes_received
        start = time.perf_counter()
        found = sum(len(set(source.find_urls(ClassSpec(query, 0, query)))) for query in queries)
        best = min(best, time.perf_counter() - start)
        received = source.browser.bytes_received - before
        source.close()
    return best / len(queries), found / len(queries), received / 1000 / len(queries)


def thumbnail_costs(photos: Path, classes: list[str], galleries: int, repeat: int) -> None:
    print("\n| result page | pictures | seconds per class | URLs per class "
          "| KB received by the browser per class |")
    print("|---|---|---|---|---|")
    pages = (("fixed height (flowers classes, 2 similar pages of 3)", {}, classes,
              {"similar_from": 2, "similar_per_result": 3}),
             ("thumbnails sized as they load (`gallery`, 1 similar page)",
              {"batch": 20, "scrolls": 1, "item_height": None}, ["gallery"] * galleries,
              {"similar_from": 1, "similar_per_result": 100}))
    for title, options, queries, overrides in pages:
        server = Server(photos, 0.0, **options)
        try:
            for load_images in (False, True):
                seconds, urls, kilobytes = paging_cost(server.web, queries, load_images,
                                                       repeat, **overrides)
                print(f"| {title} | {'allowed' if load_images else 'blocked'} "
                      f"| {seconds:.2f} s | {urls:.0f} | {kilobytes:.0f} KB |")
        finally:
            server.close()


def main() -> None:
    args = parse_args()
    classes = sorted(FakeWeb(args.photos).photos)
    workers_series, repeat, photos = WORKERS, args.repeat, None
    if args.smoke:
        classes, workers_series, repeat, photos = (classes[:SMOKE_CLASSES], SMOKE_WORKERS, 1,
                                                   SMOKE_PHOTOS)
    print(f"{'smoke run: ' if args.smoke else ''}{len(classes)} classes of {args.photos}, "
          f"{photos or 'all'} photos each, best of {repeat}; host_delay 0 (one local host)")
    print("| server latency | " + " | ".join(f"{w} workers" for w in workers_series) + " |")
    print("|---|" + "---|" * len(workers_series))
    for latency in (0.0, args.latency):
        server = Server(args.photos, latency)
        try:
            urls = photo_urls(server.web, classes, photos)
            rates = [images_per_second(server.web, urls, workers, repeat)
                     for workers in workers_series]
        finally:
            server.close()
        print(f"| {latency * 1000:.0f} ms | " + " | ".join(f"{rate:.0f} images/s"
                                                          for rate in rates) + " |")
    server = Server(args.photos, args.latency)
    try:
        startup, in_browser, downloading, stored = browser_share(
            server.web, classes[:1] if args.smoke else classes)
    finally:
        server.close()
    total = startup + in_browser + downloading
    print(f"\nyandex source, {1 if args.smoke else len(classes)} classes, {stored} images stored, "
          f"{args.latency * 1000:.0f} ms latency, 8 workers: browser start {startup:.1f} s, "
          f"in the browser {in_browser:.1f} s, downloading {downloading:.1f} s; "
          f"browser share {(startup + in_browser) / total:.0%} of {total:.1f} s")
    thumbnail_costs(args.photos, classes[:1] if args.smoke else classes,
                    1 if args.smoke else len(classes), repeat)


if __name__ == "__main__":
    main()
