"""The shared downloader against a local server: every fault ends as a manifest reason, good
images are kept under content-hash names, retries only where they help, bounded and polite; no
connection to a refused address, one deadline per file, no credentials in the records."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from pathlib import Path

import pytest

from imgclf.core.classes import ClassSpec
from imgclf.sources.base import SKIPPED, STORED, RawStore
from imgclf.sources.http import download
from imgclf.sources.http.download import Downloader, HostThrottle
from imgclf.sources.http.guard import AddressGuard
from imgclf.sources.http.transport import new_session

from helpers.webfake import FakeWeb, TlsServer, free_port, local_settings, with_trusted_ca

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


class FakeClock:
    """Time that moves only when someone sleeps: each wait's start time is exact."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_throttle_spaces_requests_to_one_host_only() -> None:
    clock = FakeClock()
    throttle = HostThrottle(0.5, clock=clock, sleep=clock.sleep)
    for url in ["http://a.example/1", "http://a.example/2", "http://b.example/1",
                "http://a.example/3"]:
        throttle.wait(url)
    # Three requests to a.example at once start 0.5 s apart; b.example does not wait for them.
    assert clock.sleeps == [0.0, 0.5, 0.0, 1.0]
    clock.now += 5  # long after: a.example's next request need not wait
    throttle.wait("http://a.example/4")
    assert clock.sleeps[-1] == 0.0


# ---- Where connections may go (scrape.allow_private), always through servers on 127.0.0.1. ----

def only_ipv4_answers(monkeypatch) -> None:
    """`localhost` may resolve to ::1 too; keep every test's traffic on 127.0.0.1."""
    real = socket.getaddrinfo

    def ipv4(host, port, family=0, *args, **kwargs):
        return real(host, port, socket.AF_INET, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", ipv4)


def test_loopback_is_refused_in_every_spelling_without_a_connection(downloader, web: FakeWeb,
                                                                    tmp_path: Path,
                                                                    monkeypatch) -> None:
    only_ipv4_answers(monkeypatch)
    path = f"/img/daisy/{web.photos['daisy'][0]}"
    urls = [f"http://{host}:{web.port}{path}"
            for host in ("127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1")]
    records = list(downloader(allow_private=False).download(SPEC, urls, RawStore(tmp_path)))
    assert {r.origin for r in records} == set(urls)
    for record in records:
        assert record.status == SKIPPED and record.http_status == 0
        assert record.reason.startswith("blocked address: ")
        assert record.reason.endswith("127.0.0.1 is loopback; set scrape.allow_private to allow")
    assert web.requests == []  # refused before connecting
    assert not list(tmp_path.iterdir())


def test_a_redirect_to_a_refused_address_is_not_followed(downloader, web: FakeWeb,
                                                         flowers_mini: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    """`web` stands for a public host and `inner` for an internal one: both listen on
    127.0.0.1, so the guard's rule is patched to let only `web`'s port through."""
    refusal = AddressGuard.refusal
    with FakeWeb(flowers_mini) as inner:
        monkeypatch.setattr(AddressGuard, "refusal", lambda guard, ip, port: (
            None if port == web.port else refusal(guard, ip, port)))
        image = f"/img/daisy/{web.photos['daisy'][0]}"
        urls = [web.url(image), web.url("/redirect?to=" + inner.url(image)),
                web.url("/redirect?to=" + web.url(image)),
                web.url("/redirect?to=file:///etc/passwd")]
        records = {r.origin: r for r in downloader(allow_private=False).download(
            SPEC, urls, RawStore(tmp_path))}
        assert inner.requests == []
    assert records[urls[0]].status == STORED and records[urls[2]].status == STORED
    assert records[urls[1]].status == SKIPPED
    assert records[urls[1]].reason == ("blocked address: 127.0.0.1 is loopback; set "
                                       "scrape.allow_private to allow")
    assert records[urls[3]].reason == "not http(s): file:///etc/passwd (a redirect)"


def test_connects_to_the_address_it_checked(downloader, web: FakeWeb, tmp_path: Path,
                                            monkeypatch) -> None:
    """DNS answers 127.0.0.1 once, then fails: a second look-up (to connect) would fail."""
    real, lookups = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host == "pinned.test":
            lookups.append(host)
            if len(lookups) > 1:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real("127.0.0.1", port, *args, **kwargs)
        ipaddress.ip_address(host.strip("[]"))  # anything else must be a literal: no DNS here
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://pinned.test:{web.port}/img/daisy/{web.photos['daisy'][0]}"
    [record] = downloader().download(SPEC, [url], RawStore(tmp_path))
    assert record.status == STORED, record.reason
    assert lookups == ["pinned.test"]


def test_unresolvable_and_refused_are_connection_errors_not_timeouts(downloader,
                                                                     tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    # `a..b` cannot be encoded as a DNS name, so no resolver is asked.
    urls = ["http://a..b/x.jpg", f"http://127.0.0.1:{closed}/x.jpg"]
    records = {r.origin: r.reason for r in downloader().download(SPEC, urls, RawStore(tmp_path))}
    assert records == {urls[0]: "connection error: NameResolutionError",
                       urls[1]: "connection error: NewConnectionError"}


def test_no_connection_outside_a_fetch(web: FakeWeb) -> None:
    with pytest.raises(RuntimeError, match="outside `with Fetch"):
        new_session(retries=0, backoff=0).get(web.url("/img/"), timeout=1)
    assert web.requests == []


def test_tls_keeps_the_host_name_for_sni_and_the_certificate(downloader, flowers_mini: Path,
                                                            tmp_path: Path,
                                                            monkeypatch) -> None:
    """An HTTPS server on 127.0.0.1 whose certificate names only `pinned.test`: the download
    works only if TLS checks the name while the socket goes to the checked address."""
    with TlsServer(flowers_mini, "pinned.test", tmp_path) as server:
        real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *args, **kwargs: real(
            "127.0.0.1" if host == "pinned.test" else host, port, *args, **kwargs))
        monkeypatch.setattr(download, "new_session", with_trusted_ca(server.ca_file))
        url = f"https://pinned.test:{server.port}/img/daisy/{server.photo_name}"
        [record] = downloader().download(SPEC, [url], RawStore(tmp_path / "raw"))
        assert record.status == STORED, record.reason
        assert server.sni_names == ["pinned.test"]


# ---- The whole-file deadline and the backoff. ---------------------------------------------------

def test_headers_sent_a_byte_a_second_are_cut_off_at_file_timeout(downloader, web: FakeWeb,
                                                                  tmp_path: Path) -> None:
    web.header_byte_seconds = 1.0  # each byte well within `timeout`: only the deadline can stop it
    fetch = downloader(timeout=2.0, file_timeout=3.0, retries=3)
    [record] = fetch.download(SPEC, [web.url("/fault/slow-headers.jpg")], RawStore(tmp_path))
    assert record.status == SKIPPED
    assert record.reason == "too slow: not complete after 3 s (scrape.file_timeout)"
    # The whole head is about 70 bytes: the client hung up after the first few.
    assert web.header_bytes_sent <= 5
    assert web.count("/fault/slow-headers.jpg") == 1  # no retry after the deadline


def test_the_first_retry_waits_backoff(downloader, web: FakeWeb, tmp_path: Path) -> None:
    url = web.fault_urls()["flaky (kept)"]  # 500, then 200
    [record] = downloader(retries=1, backoff=0.4).download(SPEC, [url], RawStore(tmp_path))
    assert record.status == STORED
    [first, second] = [when for when, path in web.arrivals]
    assert second - first >= 0.4  # urllib3's own Retry sends the first retry at once


def test_no_retry_waits_past_the_deadline(downloader, web: FakeWeb, tmp_path: Path) -> None:
    url = web.fault_urls()["flaky (kept)"]
    [record] = downloader(retries=1, backoff=30.0).download(SPEC, [url], RawStore(tmp_path))
    assert record.reason == "too slow: not complete after 1.5 s (scrape.file_timeout)"
    assert web.count("/fault/flaky.jpg") == 1


# ---- Credentials never reach the manifest. ------------------------------------------------------

def test_records_carry_no_credentials(downloader, web: FakeWeb, tmp_path: Path) -> None:
    image = f"/img/daisy/{web.photos['daisy'][0]}"
    urls = [f"http://alice:hunter2@127.0.0.1:{web.port}{image}?token=s3cr3t&size=big",
            f"ftp://bob:opensesame@127.0.0.1:{web.port}/x.jpg",
            f"http://127.0.0.1:{web.port}/fault/missing.jpg?X-Amz-Signature=f00d"]
    records = list(downloader().download(SPEC, urls, RawStore(tmp_path)))
    text = repr(records)
    for secret in ("hunter2", "s3cr3t", "opensesame", "f00d", "alice", "bob"):
        assert secret not in text
    stored = next(r for r in records if r.status == STORED)
    assert stored.origin == f"http://REDACTED@127.0.0.1:{web.port}{image}?token=REDACTED&size=big"
    assert web.authorizations  # the credentials were used, only not recorded
