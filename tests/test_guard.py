"""Pure functions of the web sources' defences: the address rules, the URL schemes, the backoff
schedule and the redaction of credentials. No connection is attempted here."""

from __future__ import annotations

import ipaddress
import os

import pytest
from urllib3.exceptions import ConnectTimeoutError

from imgclf.core.errors import StageError
from imgclf.sources.http.credentials import expand_env, redact, redact_url
from imgclf.sources.http.guard import (
    AddressGuard,
    BlockedAddress,
    address_rule,
    resolve,
    scheme_refusal,
)
from imgclf.sources.http.transport import Backoff


@pytest.mark.parametrize("address, rule", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6 is judged as the IPv4 address
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("::ffff:10.1.2.3", "private"),
    ("100.64.0.1", "not globally routable"),  # carrier-grade NAT: neither private nor global
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("::127.0.0.1", "reserved"),
    ("64:ff9b::7f00:1", "reserved"),  # NAT64 of 127.0.0.1
    ("fec0::1", "site-local"), ("192.0.2.1", "private"), ("198.18.0.1", "private"),
    # public addresses are allowed
    ("8.8.8.8", None), ("1.1.1.1", None), ("93.184.215.14", None), ("172.32.0.1", None),
    ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_address_rules(address: str, rule: str | None) -> None:
    assert address_rule(ipaddress.ip_address(address)) == rule


def test_allow_private_lifts_only_the_private_rules() -> None:
    strict, lenient = AddressGuard(allow_private=False), AddressGuard(allow_private=True)
    loopback, metadata = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("169.254.169.254")
    assert strict.refusal(loopback, 80) == (
        "127.0.0.1 is loopback; set scrape.allow_private to allow")
    assert strict.refusal(metadata, 80) == (
        "169.254.169.254 is link-local; set scrape.allow_private to allow")
    assert lenient.refusal(loopback, 80) is None and lenient.refusal(metadata, 80) is None
    for never in ("0.0.0.0", "224.0.0.1", "240.0.0.1"):
        assert lenient.refusal(ipaddress.ip_address(never), 80).endswith("(never allowed)")
    assert strict.refusal(ipaddress.ip_address("8.8.8.8"), 443) is None


@pytest.mark.parametrize("spelling", ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1",
                                      "127.1", "localhost"])
def test_every_spelling_of_loopback_resolves_to_loopback_and_is_blocked(spelling: str) -> None:
    # Numeric spellings and /etc/hosts: resolving them sends nothing anywhere.
    assert all(ip.is_loopback for ip in resolve(spelling, 80))
    with pytest.raises(BlockedAddress, match=r"^blocked address: .*loopback; set "
                                             r"scrape\.allow_private to allow$"):
        AddressGuard(allow_private=False).addresses(spelling, 80)


def test_url_refusal_names_the_scheme_or_the_rule() -> None:
    guard = AddressGuard(allow_private=False)
    assert guard.url_refusal("file:///etc/passwd") == "not http(s): file:///etc/passwd"
    assert guard.url_refusal("javascript:alert(1)").startswith("not http(s)")
    assert guard.url_refusal("http://2130706433:8080/admin") == (
        "blocked address: 2130706433 -> 127.0.0.1 is loopback; set scrape.allow_private to allow")
    assert guard.url_refusal("http://[::1]:8080/") == (
        "blocked address: ::1 is loopback; set scrape.allow_private to allow")
    assert guard.url_refusal("http://127.0.0.1:99999/") == "bad url: http://127.0.0.1:99999/"
    assert scheme_refusal("HTTPS://example.org/a.jpg") is None


def test_backoff_waits_backoff_then_doubles() -> None:
    retry = Backoff(total=3, backoff_factor=0.5)
    waits = []
    for _ in range(3):
        retry = retry.increment(method="GET", url="/x.jpg", error=ConnectTimeoutError())
        waits.append(retry.get_backoff_time())
    assert waits == [0.5, 1.0, 2.0]  # urllib3's own Retry: [0, 1.0, 2.0]


@pytest.mark.parametrize("url, expected", [
    ("http://user:hunter2@h.example/list/", "http://REDACTED@h.example/list/"),
    ("https://h.example/a.jpg?size=big&token=abc123&x=1",
     "https://h.example/a.jpg?size=big&token=REDACTED&x=1"),
    ("https://b.s3.amazonaws.com/k.jpg?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d&v=2",
     "https://b.s3.amazonaws.com/k.jpg?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&v=2"),
    ("https://h.example/cb#access_token=tok&state=1", "https://h.example/cb#access_token=REDACTED"
                                                     "&state=1"),
    ("https://h.example/a.jpg?API_KEY=1&sig=2&Password=3",
     "https://h.example/a.jpg?API_KEY=REDACTED&sig=REDACTED&Password=REDACTED"),
    # URLs without secrets are left byte for byte (they are keys of the manifest)
    ("https://h.example/a%20b.jpg?q=rose&page=2", "https://h.example/a%20b.jpg?q=rose&page=2"),
    ("http://user:pw@[::1/x", "http://REDACTED@[::1/x"),  # urlsplit refuses it
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_every_url() -> None:
    message = ("http://u:pw@a.example/list/: http 404; see 'https://b.example/?key=k1' "
               "or <ftp://c:d@e.example/>")
    assert redact(message) == ("http://REDACTED@a.example/list/: http 404; see "
                               "'https://b.example/?key=REDACTED' or <ftp://REDACTED@e.example/>")


def test_values_from_the_environment_are_filled_in_and_never_shown(monkeypatch) -> None:
    monkeypatch.setenv("IMGCLF_TEST_SECRET", "n0t-in-params")
    url = expand_env("scrape.shop.url", "https://shop.example/${IMGCLF_TEST_SECRET}/list")
    assert url == "https://shop.example/n0t-in-params/list"
    assert redact(f"{url}: failed") == "https://shop.example/${IMGCLF_TEST_SECRET}/list: failed"
    assert redact_url(url) == "https://shop.example/${IMGCLF_TEST_SECRET}/list"
    monkeypatch.delenv("IMGCLF_TEST_SECRET")
    assert "IMGCLF_TEST_SECRET" not in os.environ
    with pytest.raises(StageError, match=r"^scrape\.shop\.url: needs the environment variable "
                                         r"IMGCLF_TEST_SECRET, which is not set$"):
        expand_env("scrape.shop.url", "https://${IMGCLF_TEST_SECRET}@shop.example/")
