"""The yandex source: both result-page layouts, scrolling and "more" (also when the first batch
fits the window, and when thumbnails take their size only as they load), similar images counted
once, no request of a page's to a refused address, the stage with captcha, empty and faulty
results, and an unreachable search host — real headless Chromium against a local server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from imgclf.core.classes import ClassSpec
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.paths import RAW_DIR, RAW_MANIFEST
from imgclf.sources.browser import Browser
from imgclf.sources.http.guard import AddressGuard
from imgclf.sources.yandex import YandexSource, page_url, parse_results
from imgclf.stages import scrape

from helpers.webfake import GALLERY, SEARCH_SIZE, FakeWeb, free_port, local_settings

LAYOUT_PATHS = {"2024-25": "/images/search", "serp-item": "/legacy/images/search"}


@pytest.fixture
def params(web_params):
    return web_params


@pytest.fixture
def source(params, closing):
    def build(**scrape) -> YandexSource:
        return closing(YandexSource(params(**scrape).scrape))
    return build


def test_parse_results_reads_both_layouts_and_skips_broken_items() -> None:
    bem = json.dumps({"serp-item": {"img_href": "http://a.example/1.jpg"}})
    old = (f"<div class='serp-item' data-bem='{bem}'></div>"
           "<div class='serp-item' data-bem='not json'></div>"
           "<div class='serp-item' data-bem='{\"serp-item\": {}}'></div>")
    new = ('<a class="ImagesContentImage-Cover" href="/images/search?pos=0&amp;'
           'img_url=http%3A%2F%2Fb.example%2F2.jpg%3Fx%3D1&amp;rpt=simage">'
           '<img class="ImagesContentImage-Image" src="//avatars.example/thumb"></a>'
           '<a class="ImagesContentImage-Cover" href="/images/search?pos=1"></a>')
    assert parse_results(old) == ["http://a.example/1.jpg"]
    assert parse_results(new) == ["http://b.example/2.jpg?x=1"]
    assert parse_results("<html><body>nothing here</body></html>") == []


def test_search_url_carries_query_and_filters() -> None:
    assert page_url("https://yandex.com/images/search", text="Bellis perennis", isize="large",
                    iorient="", type="photo") == (
        "https://yandex.com/images/search?text=Bellis+perennis&isize=large&type=photo")


@pytest.mark.parametrize("layout", sorted(LAYOUT_PATHS))
def test_scrolls_and_presses_more_until_the_results_end(source, web: FakeWeb, layout) -> None:
    yandex = source(search_url=web.url(LAYOUT_PATHS[layout]))
    urls = list(yandex.find_urls(ClassSpec("daisy", 0, "daisy")))
    # 5 at load, 5 per scroll twice, then only the "more" button brings the 16th.
    assert urls == web.results("daisy")


def test_stops_at_per_class_and_expands_through_similar_images(source, web: FakeWeb) -> None:
    yandex = source(per_class=7, similar_from=2, similar_per_result=4)
    urls = list(yandex.find_urls(ClassSpec("roses", 0, "roses")))
    first = web.results("roses")[:7]
    similar = [web.similar(url) for url in first[:2]]
    # The two similar pages overlap: the second one's URL that the first gave is not counted,
    # so each page adds 4 new URLs.
    assert similar[1][0] in similar[0][:4]
    second = [url for url in similar[1] if url not in similar[0][:4]][:4]
    assert urls == first + similar[0][:4] + second
    assert not set(urls) & set(web.results("roses")[7:SEARCH_SIZE])


def test_stage_reports_captcha_and_empty_classes_and_goes_on(params, web: FakeWeb,
                                                             capsys) -> None:
    scrape.run(params(classes=["captcha", "tulips", "nothing"], per_class=6))
    rows = read_csv(RAW_MANIFEST)
    assert {row["class"] for row in rows} == {"tulips"}
    assert len(rows) == 6 and all(row["status"] == "ok" for row in rows)
    out = capsys.readouterr()
    assert "captcha: captcha: Yandex asks to prove a human is searching" in out.err
    assert "nothing: no results for 'nothing'" in out.err
    summary = out.out
    assert "problems" in summary and "captcha:" in summary and "no results" in summary
    assert [line.split()[:4] for line in summary.splitlines() if line.startswith("tulips")] == [
        ["tulips", "6", "0", "6"]]


def test_stage_keeps_good_images_and_names_each_rejection(params, web: FakeWeb,
                                                          capsys) -> None:
    scrape.run(params(classes=["faults"]))
    rows = {row["origin"]: row for row in read_csv(RAW_MANIFEST)}
    faults = web.fault_urls()
    assert set(rows) == set(web.results("faults"))
    for kind, url in faults.items():
        expected = "" if kind.endswith("(kept)") else kind.split(" (")[0]
        assert rows[url]["reason"].split(":")[0] == expected, (kind, rows[url])
        assert rows[url]["query"] == "faults"
    kept = [row for row in rows.values() if row["status"] == "ok"]
    assert len(kept) == 4  # flaky, slow and the two good photos
    # flaky and slow serve the first photo again: same content, same file.
    assert {p.name for p in (RAW_DIR / "faults").iterdir()} == {
        Path(row["file"]).name for row in kept}
    assert len({row["file"] for row in kept}) == 2
    summary = capsys.readouterr().out
    assert "rejected by reason:" in summary and "redirect loop" in summary


def test_a_run_that_collects_nothing_fails_clearly(params) -> None:
    with pytest.raises(StageError, match="no image was collected for any class .*captcha"):
        scrape.run(params(classes=["captcha", "nothing"], per_class=6))
    assert RAW_MANIFEST.is_file()  # what was tried is kept


@pytest.fixture(scope="module")
def short_web(flowers_mini: Path):
    """Results 50 px high, 10 per batch: the first batch fits the window, so the page cannot
    scroll until the source makes it; the loader fires only on real scroll events."""
    with FakeWeb(flowers_mini, batch=10, scrolls=2, item_height=50) as server:
        yield server


@pytest.mark.parametrize("layout", sorted(LAYOUT_PATHS))
def test_pages_through_a_result_list_whose_first_batch_fits_the_window(make_params, closing,
                                                                       short_web: FakeWeb,
                                                                       layout) -> None:
    settings = {**local_settings(short_web), "search_url": short_web.url(LAYOUT_PATHS[layout]),
                "similar_from": 2, "similar_per_result": 3}
    params = make_params({f"scrape.{key}": value for key, value in settings.items()})
    yandex = closing(YandexSource(params.scrape))
    urls = list(yandex.find_urls(ClassSpec("many", 0, "many")))
    # The page lists 120 distinct URLs, some twice; per_class 100 takes the first 100 distinct.
    # Each similar page starts with 3 URLs of the search page, which do not count.
    first = [short_web.many_url(i) for i in range(100)]
    similar = [url for i in (0, 1) for url in short_web.many_similar(i)[3:]]
    assert urls == first + similar
    assert len(set(urls)) == len(urls)


@pytest.fixture(scope="module")
def gallery_web(flowers_mini: Path):
    """Yandex as in 2024-25: 20 results after load, 20 more when the reader scrolls to the end,
    then a "more" button for the next 20; thumbnails are plain <img> without a size, and the
    results have none of their own, so the page lays out only as the thumbnails load."""
    with FakeWeb(flowers_mini, batch=20, scrolls=1, item_height=None) as server:
        yield server


def gallery_source(make_params, closing, web: FakeWeb, layout: str, **scrape) -> YandexSource:
    settings = {**local_settings(web), "search_url": web.url(LAYOUT_PATHS[layout]), **scrape}
    params = make_params({f"scrape.{key}": value for key, value in settings.items()})
    return closing(YandexSource(params.scrape))


@pytest.mark.parametrize("layout", sorted(LAYOUT_PATHS))
def test_pages_through_results_whose_thumbnails_take_their_size_as_they_load(
        make_params, closing, gallery_web: FakeWeb, layout: str) -> None:
    yandex = gallery_source(make_params, closing, gallery_web, layout, similar_from=1,
                            similar_per_result=100)
    urls = list(yandex.find_urls(ClassSpec("gallery", 0, "gallery")))
    first = gallery_web.results("gallery")
    assert len(first) == GALLERY == 60
    # All 60 of the search (load, scroll, "more"), then all 60 of the first one's similar page.
    assert urls == first + gallery_web.similar(first[0])


def test_a_page_cannot_make_the_browser_load_a_refused_address(make_params, closing,
                                                                 gallery_web: FakeWeb,
                                                                 flowers_mini: Path,
                                                                 monkeypatch) -> None:
    """The result page shows an <img> of `inner`, an internal host. Both are on 127.0.0.1, so
    the rule is patched to let only the search host's port through (allow_private is off)."""
    refusal = AddressGuard.refusal
    monkeypatch.setattr(AddressGuard, "refusal", lambda guard, ip, port: (
        None if port == gallery_web.port else refusal(guard, ip, port)))
    with FakeWeb(flowers_mini) as inner:
        gallery_web.beacon = inner.url("/img/daisy/" + inner.photos["daisy"][0])
        thumbnails_before = gallery_web.count("/thumbs/")
        try:
            yandex = gallery_source(make_params, closing, gallery_web, "2024-25",
                                    allow_private=False)
            urls = list(yandex.find_urls(ClassSpec("gallery", 0, "gallery")))
        finally:
            gallery_web.beacon = ""
        assert inner.requests == []
    assert urls == gallery_web.results("gallery")
    # The browser did load pictures: the search host's own thumbnails went through.
    assert gallery_web.count("/thumbs/") - thumbnails_before >= GALLERY


def test_an_unreachable_search_host_fails_in_seconds_before_the_browser(params, monkeypatch):
    closed = free_port()  # nothing listens there
    monkeypatch.setattr(Browser, "_start", lambda browser: pytest.fail("the browser started"))
    run_params = params(classes=["daisy"], search_url=f"http://127.0.0.1:{closed}/images/search")
    with pytest.raises(StageError, match=rf"^scrape\.search_url: cannot connect to "
                                         rf"127\.0\.0\.1:{closed} \(Connection refused\); without "
                                         r"the internet, .*scrape\.source: folder"):
        scrape.run(run_params)
    assert not RAW_MANIFEST.exists()


def test_an_unresolvable_search_host_fails_before_the_browser(params, monkeypatch) -> None:
    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # offline: and nothing is asked of DNS
    monkeypatch.setattr(Browser, "_start", lambda browser: pytest.fail("the browser started"))
    with pytest.raises(StageError, match=r"^scrape\.search_url: yandex\.com does not resolve; "
                                         r"without the internet, .*scrape\.folder"):
        scrape.run(params(classes=["daisy"], search_url="https://yandex.com/images/search"))


def test_a_search_host_on_a_refused_address_is_named_with_its_rule(params, web: FakeWeb) -> None:
    before = len(web.requests)
    with pytest.raises(StageError, match=r"^scrape\.search_url: blocked address: 127\.0\.0\.1 is "
                                         r"loopback; set scrape\.allow_private to allow$"):
        scrape.run(params(classes=["daisy"], allow_private=False))
    assert len(web.requests) == before


def test_a_search_url_with_a_bad_port_is_named(params) -> None:
    with pytest.raises(StageError, match=r"^scrape\.search_url: an http\(s\) URL with a valid "
                                         r"port \(got 'http://127\.0\.0\.1:99999/images'\)$"):
        scrape.run(params(classes=["daisy"], search_url="http://127.0.0.1:99999/images"))
