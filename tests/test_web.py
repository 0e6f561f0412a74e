"""The web source: a static catalogue (requests + BeautifulSoup) and a shop that JavaScript
builds (headless Chromium), against a local server; and what it refuses to open or write."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

import pytest

from imgclf.core.classes import ClassSpec
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.params import ParamsError
from imgclf.core.paths import RAW_DIR, RAW_MANIFEST
from imgclf.sources.browser import Browser
from imgclf.sources.http.download import PageProblem
from imgclf.sources.http.guard import AddressGuard
from imgclf.sources.web import WebSource, find_links
from imgclf.stages import scrape

from helpers.webfake import CATALOGUE, SHOP, FakeWeb

UNUSED = {"url": "", "class_links": "", "images": ""}


@pytest.fixture
def params(web_params):
    return functools.partial(web_params, source="web")


@pytest.fixture
def source(params, closing):
    def build(**scrape) -> WebSource:
        return closing(WebSource(params(**scrape).scrape))
    return build


def catalogue_urls(web: FakeWeb, name: str, part: slice) -> list[str]:
    return [web.url(f"/img/{name}/{file}") for file in web.photos[name][part]]


def test_find_links_resolves_relative_targets_of_links_and_images() -> None:
    html = ('<a class="x" href="roses.html"> Red\n Roses </a><img class="x" src="/i/1.jpg">'
            '<a class="x">no target</a>')
    assert find_links(html, "http://h.example/list/", ".x") == [
        ("red roses", "http://h.example/list/roses.html"), ("", "http://h.example/i/1.jpg")]


def test_static_catalogue_without_a_browser(source, web: FakeWeb) -> None:
    web_source = source(shop=UNUSED)
    spec = ClassSpec("daisy", 0, "Bellis perennis")  # the link text is the name: "Daisy"
    assert list(web_source.find_urls(spec)) == catalogue_urls(web, "daisy", CATALOGUE)
    assert web_source.browser._driver is None  # static pages never start Chromium


def test_shop_built_by_javascript(source, web: FakeWeb) -> None:
    web_source = source(catalogue=UNUSED)
    assert list(web_source.find_urls(ClassSpec("tulips", 0, "tulips"))) == catalogue_urls(
        web, "tulips", SHOP)


def test_both_sites_up_to_per_class(source, web: FakeWeb) -> None:
    urls = list(source(per_class=15).find_urls(ClassSpec("roses", 0, "roses")))
    assert urls == (catalogue_urls(web, "roses", CATALOGUE)
                    + catalogue_urls(web, "roses", SHOP)[:3])


def test_stage_reports_missing_pages_and_goes_on(params, web: FakeWeb, capsys) -> None:
    broken = {"url": web.url("/no-such-list/"), "class_links": "a", "images": "img"}
    scrape.run(params(classes=["sunflowers", "lotus"], shop=broken))  # a catalogue and a shop
    rows = read_csv(RAW_MANIFEST)
    assert {row["class"] for row in rows} == {"sunflowers"}
    stored = {row["origin"] for row in rows if row["status"] == "ok"}
    assert stored == set(catalogue_urls(web, "sunflowers", CATALOGUE)) and len(rows) == len(stored)
    err = capsys.readouterr().err
    assert "lotus: scrape.catalogue: no link named 'lotus'" in err
    assert "scrape.shop: " + web.url("/no-such-list/") + ": http 404" in err


@pytest.mark.parametrize("overrides, message", [
    ({"scrape.source": "web", "classes": "data/classes/gemstones.csv"},
     r"scrape\.catalogue\.url: a list-page URL .*when scrape\.source is web"),
    ({"scrape.shop": {"url": "http://h.example/", "class_links": "a", "images": "img[["}},
     r"scrape\.shop\.images: a CSS selector"),
    ({"scrape.catalogue": {"url": "ftp://h.example/", "class_links": "a", "images": "img"}},
     r"scrape\.catalogue\.url: an http\(s\) URL"),
])
def test_bad_site_settings_fail_at_start(make_params, overrides, message) -> None:
    with pytest.raises(ParamsError, match=message):
        make_params(overrides)


def test_an_interrupted_run_keeps_what_it_saved_and_the_next_goes_on(params, web: FakeWeb,
                                                                     monkeypatch) -> None:
    run_params = params(classes=["daisy", "roses"], shop=UNUSED)
    append = scrape.Journal.append
    journaled: list[str] = []

    def append_then_stop(journal: scrape.Journal, record) -> None:
        append(journal, record)
        journaled.append(record.origin)
        if len(journaled) == 5:
            raise KeyboardInterrupt  # as if the run were killed here
    monkeypatch.setattr(scrape.Journal, "append", append_then_stop)
    with pytest.raises(KeyboardInterrupt):
        scrape.run(run_params)
    assert not RAW_MANIFEST.exists()
    assert [r.origin for r in scrape.read_journal()] == journaled

    monkeypatch.setattr(scrape.Journal, "append", append)
    web.requests.clear()
    scrape.run(run_params)
    assert not set(journaled) & set(web.url(path) for path in web.requests)
    rows = read_csv(RAW_MANIFEST)
    assert len(rows) == 2 * len(web.photos["daisy"][CATALOGUE])
    assert all((RAW_DIR / row["file"]).is_file() for row in rows)
    assert not scrape.RAW_JOURNAL.exists()


def test_a_journal_left_beside_the_manifest_adds_no_duplicates(params, web: FakeWeb) -> None:
    run_params = params(classes=["daisy"], shop=UNUSED, per_class=3)
    scrape.run(run_params)
    manifest = RAW_MANIFEST.read_text(encoding="utf-8")
    # Killed after writing the manifest, before removing the journal, which ends mid-row.
    scrape.RAW_JOURNAL.write_text(manifest + "daisy,daisy,http://cut.example/", encoding="utf-8")
    web.requests.clear()
    scrape.run(run_params)
    assert RAW_MANIFEST.read_text(encoding="utf-8") == manifest
    assert not [path for path in web.requests if path.startswith("/img/")]


def test_the_browser_leaves_no_profile_behind(web: FakeWeb) -> None:
    browser = Browser(page_timeout=10.0, local_only=True, guard=AddressGuard(allow_private=True))
    browser.load(web.url("/shop/"))
    scratch = Path(browser._scratch.name)
    assert (scratch / "profile").is_dir()  # Chromium's profile lives in the browser's folder
    browser.close()
    assert not scratch.exists()


# ---- Hostile pages: where the source may go, slow servers, credentials. -------------------------

def test_without_allow_private_the_local_catalogue_is_refused_unfetched(params,
                                                                       web: FakeWeb) -> None:
    before = len(web.requests)
    with pytest.raises(StageError, match=r"no image was collected for any class \(first "
                                         r"problem: scrape\.catalogue: .*blocked address: "
                                         r"127\.0\.0\.1 is loopback; set scrape\.allow_private "
                                         r"to allow"):
        scrape.run(params(classes=["daisy"], shop=UNUSED, allow_private=False))
    assert len(web.requests) == before


def test_the_browser_opens_no_page_the_guard_refuses(source, web: FakeWeb) -> None:
    web_source = source(catalogue=UNUSED, allow_private=False)
    with pytest.raises(PageProblem, match=r"blocked address: 127\.0\.0\.1 is loopback"):
        list(web_source.find_urls(ClassSpec("tulips", 0, "tulips")))
    assert web_source.browser._driver is None  # checked before Chromium even started


@pytest.mark.parametrize("detour", ["/redirect", "/wander"])  # an HTTP redirect, a script
def test_the_browser_reads_nothing_where_it_was_taken_to_a_refused_host(
        source, web: FakeWeb, flowers_mini: Path, monkeypatch, detour: str) -> None:
    """`web` is the public host, `inner` an internal one; both on 127.0.0.1, so the rule is
    patched to let only `web`'s port through."""
    refusal = AddressGuard.refusal
    monkeypatch.setattr(AddressGuard, "refusal", lambda guard, ip, port: (
        None if port == web.port else refusal(guard, ip, port)))
    with FakeWeb(flowers_mini) as inner:
        shop = {"url": web.url(f"{detour}?to=" + inner.url("/shop/")),
                "class_links": "a.category", "images": "img.product-photo"}
        web_source = source(catalogue=UNUSED, shop=shop, allow_private=False)
        with pytest.raises(PageProblem, match=r"/shop/: blocked address: 127\.0\.0\.1 is "
                                              r"loopback"):
            list(web_source.find_urls(ClassSpec("tulips", 0, "tulips")))
        # The proxy refused the connection: the internal host got no request at all, and the
        # browser, taken to the refusal's error page, left it for about:blank unread.
        assert inner.requests == []
        assert web_source.browser.driver.current_url == "about:blank"


def test_file_links_on_pages_are_never_opened(params, web: FakeWeb, capsys) -> None:
    """Both list pages link "Etc" to file:///etc/: the static catalogue and the shop that
    Chromium renders refuse it alike, and nothing of the local disk reaches the manifest."""
    with pytest.raises(StageError, match="no image was collected"):
        scrape.run(params(classes=["etc"]))
    err = capsys.readouterr().err
    assert "scrape.catalogue: file:///etc/: not http(s): file:///etc/" in err
    assert "scrape.shop: file:///etc/: not http(s): file:///etc/" in err
    assert read_csv(RAW_MANIFEST) == []


def test_a_list_page_whose_headers_trickle_is_cut_off_at_file_timeout(source,
                                                                      web: FakeWeb) -> None:
    slow = {"url": web.url("/fault/slow-headers.jpg"), "class_links": "a", "images": "img"}
    web_source = source(catalogue=slow, shop=UNUSED)
    with pytest.raises(PageProblem, match=r"too slow: not complete after 1\.5 s "
                                          r"\(scrape\.file_timeout\)"):
        list(web_source.find_urls(ClassSpec("daisy", 0, "daisy")))


def test_credentials_come_from_the_environment_and_are_never_written(params, web: FakeWeb,
                                                                     monkeypatch,
                                                                     capsys) -> None:
    monkeypatch.setenv("IMGCLF_TEST_USER", "alice")
    monkeypatch.setenv("IMGCLF_TEST_PASSWORD", "hunter2-secret")
    catalogue = {"url": "http://${IMGCLF_TEST_USER}:${IMGCLF_TEST_PASSWORD}@"
                        f"127.0.0.1:{web.port}/catalogue/",
                 "class_links": "a.gem", "images": "div.photos a.full"}
    broken_shop = {"url": f"http://carol:opensesame@127.0.0.1:{web.port}/no-shop/?token=t0k3n",
                   "class_links": "a", "images": "img"}
    web.authorizations.clear()
    scrape.run(params(classes=["daisy"], catalogue=catalogue, shop=broken_shop))
    written = RAW_MANIFEST.read_text(encoding="utf-8") + "".join(capsys.readouterr())
    for secret in ("alice", "hunter2-secret", "carol", "opensesame", "t0k3n"):
        assert secret not in written
    rows = read_csv(RAW_MANIFEST)
    assert [row["status"] for row in rows] == ["ok"] * len(web.photos["daisy"][CATALOGUE])
    assert all(row["origin"].startswith(f"http://REDACTED@127.0.0.1:{web.port}/img/daisy/")
               for row in rows)
    assert "scrape.shop: http://REDACTED@127.0.0.1" in written  # the problem, redacted
    assert base64.b64encode(b"alice:hunter2-secret").decode() in " ".join(web.authorizations)
