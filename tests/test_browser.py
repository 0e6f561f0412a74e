"""The browser's guarded proxy, spoken to with raw sockets as Chromium speaks to it (absolute-form
requests and CONNECT), and `Browser.settle` under a clock of the test's own. Every server is on
127.0.0.1: the public host and the internal one are told apart by their ports."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from imgclf.sources.browser import Browser
from imgclf.sources.http.guard import AddressGuard
from imgclf.sources.http.proxy import GuardedProxy

from helpers.webfake import FakeWeb


def ask(port: int, request: bytes) -> bytes:
    """Send `request` to 127.0.0.1:`port` and read the answer to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def get(target: str, host: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nProxy-Connection: keep-alive\r\n\r\n".encode()


@pytest.fixture
def inner(flowers_mini: Path) -> Iterator[FakeWeb]:
    """An internal host: the guard refuses it."""
    with FakeWeb(flowers_mini) as server:
        yield server


@pytest.fixture
def proxy(web: FakeWeb, monkeypatch) -> Iterator[GuardedProxy]:
    """A proxy whose guard (allow_private off) lets only `web`'s port through."""
    refusal = AddressGuard.refusal
    monkeypatch.setattr(AddressGuard, "refusal", lambda guard, ip, port: (
        None if port == web.port else refusal(guard, ip, port)))
    with GuardedProxy(AddressGuard(allow_private=False), timeout=5.0) as running:
        yield running


def test_an_allowed_request_is_relayed_and_counted(proxy: GuardedProxy, web: FakeWeb) -> None:
    photo = web.image_url("daisy", 0)
    answer = ask(proxy.port, get(photo, f"127.0.0.1:{web.port}"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == web.photo("daisy", 0)
    assert proxy.received == len(answer)
    assert web.requests[-1] == photo.split(str(web.port), 1)[1]  # origin-form upstream


@pytest.mark.parametrize("method", ["GET", "CONNECT"])
def test_a_refused_address_gets_403_and_no_connection(proxy: GuardedProxy, inner: FakeWeb,
                                                      method: str) -> None:
    authority = f"127.0.0.1:{inner.port}"
    request = (get(inner.image_url("daisy", 0), authority) if method == "GET"
               else f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    answer = ask(proxy.port, request)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"blocked address: 127.0.0.1 is loopback; set scrape.allow_private" in answer
    assert inner.requests == [] and proxy.received == 0


def test_connect_to_an_allowed_address_opens_a_tunnel(proxy: GuardedProxy, web: FakeWeb) -> None:
    authority = f"127.0.0.1:{web.port}"
    photo = web.image_url("tulips", 1).split(str(web.port), 1)[1]
    answer = ask(proxy.port, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
                 + f"GET {photo} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
                 .encode())
    established, _, relayed = answer.partition(b"\r\n\r\n")
    assert established == b"HTTP/1.1 200 Connection Established"
    assert relayed.startswith(b"HTTP/1.1 200") and relayed.endswith(web.photo("tulips", 1))


def test_requests_the_proxy_cannot_check_are_refused(proxy: GuardedProxy, web: FakeWeb) -> None:
    # An origin-form request names no host; https is only tunnelled (CONNECT), never fetched.
    assert ask(proxy.port, get("/img/x.jpg", "127.0.0.1")).startswith(b"HTTP/1.1 400 ")
    assert ask(proxy.port, get(f"https://127.0.0.1:{web.port}/", "127.0.0.1")).startswith(
        b"HTTP/1.1 400 ")


def test_a_request_for_the_proxy_itself_does_not_loop() -> None:
    with GuardedProxy(AddressGuard(allow_private=True), timeout=5.0) as proxy:
        for spelling in ("127.0.0.1", "127.1", "localhost"):
            answer = ask(proxy.port, get(f"http://{spelling}:{proxy.port}/", spelling))
            assert answer.startswith(b"HTTP/1.1 403 ") and b"to itself" in answer


def test_settle_waits_while_a_picture_loads_then_for_a_quiet_page(web: FakeWeb,
                                                                  closing) -> None:
    """The clock is the test's: each of settle's pauses moves it on, and nothing else does."""
    now = [0.0]

    def pause(seconds: float) -> None:
        now[0] += seconds
    browser = closing(Browser(page_timeout=10.0, local_only=True,
                              guard=AddressGuard(allow_private=True), load_images=True,
                              clock=lambda: now[0], sleep=pause))
    browser.load(web.url("/catalogue/"))  # a static page, no pictures
    browser.driver.execute_script("var image = document.createElement('img');"
                                  " image.src = arguments[0]; document.body.appendChild(image);",
                                  web.url("/fault/hang.jpg"))  # a picture that never arrives
    assert browser.settle("img", quiet=0.2, limit=1.0) == 1
    assert now[0] == pytest.approx(1.0, abs=0.06)  # it waited for the picture up to its limit
    browser.driver.execute_script("document.querySelector('img').remove();")
    start = now[0]
    assert browser.settle("img", quiet=0.2, limit=1.0) == 0
    assert now[0] - start == pytest.approx(0.2, abs=0.06)  # still for `quiet`, and no longer


def test_settle_does_not_wait_for_pictures_a_browser_that_blocks_them_never_loads(
        web: FakeWeb, closing) -> None:
    now = [0.0]

    def pause(seconds: float) -> None:
        now[0] += seconds
    browser = closing(Browser(page_timeout=10.0, local_only=True,
                              guard=AddressGuard(allow_private=True), load_images=False,
                              clock=lambda: now[0], sleep=pause))
    browser.load(web.url("/catalogue/daisy.html"))  # twelve <img>s, none ever complete here
    assert browser.settle("img", quiet=0.2, limit=1.0) == 12
    assert now[0] == pytest.approx(0.2, abs=0.06)
