"""The shared downloader against a local server: every fault ends as a manifest reason, good
images are kept under content-hash names, retries only where they help, bounded and polite."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from imgclf.classes import ClassSpec
from imgclf.sources import SKIPPED, STORED, RawStore
from imgclf.sources.download import Downloader, HostThrottle
from webfake import FakeWeb, local_settings

SPEC = ClassSpec(name="daisy", label=0, query="Bellis perennis")


@pytest.fixture
def web(flowers_mini: Path):
    with FakeWeb(flowers_mini) as server:  # one per test: the flaky URL fails once per server
        yield server


@pytest.fixture
def downloader(make_params, web: FakeWeb, closing):
    def build(**scrape) -> Downloader:
        settings = {**local_settings(web), **scrape}
        params = make_params({f"scrape.{key}": value for key, value in settings.items()})
        return closing(Downloader(params.scrape))
    return build


def test_faults_are_rejected_with_reasons_and_good_images_kept(downloader, web: FakeWeb,
                                                               tmp_path: Path) -> None:
    faults = web.fault_urls()
    good = [web.image_url("daisy", i) for i in range(3)]
    records = {r.origin: r for r in downloader().download(SPEC, list(faults.values()) + good,
                                                          RawStore(tmp_path))}
    assert len(records) == len(faults) + len(good)
    for kind, url in faults.items():
        record = records[url]
        if kind.endswith("(kept)"):
            assert record.status == STORED, (kind, record.reason)
        else:
            assert record.status == SKIPPED and record.file == ""
            assert record.reason.startswith(kind.split(" (")[0] + ":"), (kind, record.reason)
        assert record.query == SPEC.query
    for index, url in enumerate(good):
        record = records[url]
        photo = web.photo("daisy", index)
        assert (record.status, record.http_status, record.bytes) == (STORED, 200, len(photo))
        assert record.sha256 == hashlib.sha256(photo).hexdigest()
        assert Path(record.file).stem == record.sha256[:20]
        assert (tmp_path / record.file).read_bytes() == photo
    # What was received before a rejection is recorded: status, size and hash.
    assert records[faults["http 404"]].http_status == 404
    html = records[faults["html page"]]
    assert html.http_status == 200 and html.bytes > 0 and html.sha256
    assert records[faults["too large"]].bytes > 2_000_000


def test_retries_on_5xx_and_timeouts_but_never_on_4xx(downloader, web: FakeWeb,
                                                      tmp_path: Path) -> None:
    faults = web.fault_urls()
    urls = [faults[kind] for kind in ("flaky (kept)", "http 404", "timeout")]
    list(downloader(retries=2).download(SPEC, urls, RawStore(tmp_path)))
    assert web.count("/fault/flaky.jpg") == 2   # 500, then the retry got 200
    assert web.count("/fault/missing.jpg") == 1  # a 404 stays a 404
    assert web.count("/fault/hang.jpg") == 3     # the first try and two retries


def test_the_pool_is_bounded(downloader, web: FakeWeb, tmp_path: Path) -> None:
    web.image_delay = 0.1
    urls = [web.image_url("roses", i) for i in range(8)]
    records = list(downloader(workers=3).download(SPEC, urls, RawStore(tmp_path)))
    assert [r.status for r in records] == [STORED] * 8
    assert web.peak == 3


def test_throttle_spaces_requests_to_one_host_only() -> None:
    throttle, starts, lock = HostThrottle(0.1), [], threading.Lock()

    def request(url: str) -> None:
        throttle.wait(url)
        with lock:
            starts.append((url, time.monotonic()))
    urls = ["http://a.example/1", "http://a.example/2", "http://a.example/3", "http://b.example/1"]
    threads = [threading.Thread(target=request, args=(url,)) for url in urls]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    same_host = sorted(t for url, t in starts if "a.example" in url)
    assert all(later - earlier >= 0.095 for earlier, later in zip(same_host, same_host[1:]))
    other_host = next(t for url, t in starts if "b.example" in url)
    assert other_host - begin < 0.05
