"""A small web on 127.0.0.1 for the scraping tests, serving real photos (flowers-mini).

- `/img/<class>/<file>`: the photos, as image/jpeg;
- `/images/search?text=Q` (2024-25 layout) and `/legacy/images/search?text=Q` (the original's
  layout): a result page that JavaScript builds — a first batch after load, more on each real
  (trusted) scroll event at the end of the page, and after `scrolls` of those a "more" button;
  the image URLs are in each item's data, as on Yandex; `...&rpt=imageview&url=U` is the
  "similar images" page of U. Each result shows a thumbnail, `/thumbs/<n>.jpg` (a real JPEG,
  `THUMB_HEIGHT` px high); with `item_height=None` the results have no size of their own and the
  thumbnails none in the markup, so the page lays out only as they load. Special queries:
  `captcha` (redirects to a captcha page), `nothing` (no results), `faults` (the fault URLs
  below), `many` (`MANY` distinct URLs, some listed twice, whose similar pages repeat search
  results), `gallery` (`GALLERY` distinct URLs, each with a similar page of as many of its own);
- `/catalogue/`: a static list page linking one page per class, each holding image links (and a
  link named "Etc" to `file:///etc/`);
- `/shop/`: the same built by JavaScript (list of categories, then product photos);
- `/redirect?to=URL`: a redirect to URL; `/wander?to=URL`: a page whose script goes to URL
  50 ms after it loaded;
- `/fault/...`: 500-then-200, 404, a hanging response, a slow trickle, headers sent a byte at a
  time, a slow but complete image, a truncated JPEG, a body cut short, HTML served as
  image/jpeg, a huge body, a decompression bomb, a redirect loop.

`TlsServer` is an HTTPS server on 127.0.0.1 whose certificate names another host.

A result page also shows `beacon`, when set: one `<img>` of that URL (a page that names
another host).

Every request's path is logged in `requests` (with its arrival time in `arrivals`, and any
Authorization header in `authorizations`), so tests can tell what was fetched, how often, when.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import http.server
import io
import json
import socket
import ssl
import string
import struct
import threading
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

SEARCH_SIZE = 16         # results of a search for a class: its first photos
SIMILAR_SIZE = 6         # results of a "similar images" page
CATALOGUE = slice(0, 12)  # the photos on a class's catalogue page
SHOP = slice(12, 24)      # the photos on a class's shop page
HANG_SECONDS = 30.0
MANY = 120               # distinct results of the query `many`
GALLERY = 60             # distinct results of the query `gallery`, and of each similar page
THUMB_HEIGHT = 160       # pixels: about the height of Yandex's thumbnails

SEARCH_PAGE = string.Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>$title</title>
<style>.item { $item_style } #more { display: none; }</style>
</head>
<body>$beacon<div id="results"></div>$more
<script>
var RESULTS = $results, LEGACY = $legacy, BATCH = $batch, SCROLLS = $scrolls, DELAY = 30;
var list = document.getElementById('results'), more = document.getElementById('more');
var shown = 0, scrolls = 0;
function item(url, i) {
  var thumb = document.createElement('img');
  thumb.src = '/thumbs/' + i + '.jpg';
  if (LEGACY) {
    var div = document.createElement('div');
    div.className = 'serp-item item';
    div.setAttribute('data-bem', JSON.stringify({'serp-item': {img_href: url, pos: i}}));
    thumb.className = 'serp-item__thumb';
    div.appendChild(thumb);
    return div;
  }
  var link = document.createElement('a');
  link.className = 'ImagesContentImage-Cover item';
  link.href = '/images/search?pos=' + i + '&img_url=' + encodeURIComponent(url) + '&rpt=simage';
  thumb.className = 'ImagesContentImage-Image';
  link.appendChild(thumb);
  return link;
}
function add() {
  RESULTS.slice(shown, shown + BATCH).forEach(function (url, k) {
    list.appendChild(item(url, shown + k));
  });
  shown = Math.min(RESULTS.length, shown + BATCH);
  more.style.display = (shown < RESULTS.length && scrolls >= SCROLLS) ? 'block' : 'none';
}
function later() { setTimeout(add, DELAY); }
window.addEventListener('scroll', function (event) {
  if (!event.isTrusted) return;  // a script's dispatchEvent is not a reader scrolling
  var atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 10;
  if (atEnd && scrolls < SCROLLS && shown < RESULTS.length) { scrolls += 1; later(); }
});
more.addEventListener('click', function (event) {
  event.preventDefault(); scrolls = 0; later();
});
later();
</script></body></html>""")
MORE_BUTTONS = {True: '<div class="more"><a class="button2" id="more" href="#">Ещё картинки</a>'
                      '</div>',
                False: '<button class="FetchListButton-Button" id="more">Показать ещё</button>'}
CAPTCHA_PAGE = ('<!doctype html><html><head><title>Ой!</title></head><body>'
                '<div class="CheckboxCaptcha"><form id="checkbox-captcha-form" '
                'action="/checkcaptcha"><input type="checkbox"> Я не робот</form></div>'
                '</body></html>')
SHOP_PAGE = string.Template("""<!doctype html><html><head><meta charset="utf-8"></head>
<body><div id="shelf">loading…</div><script>
var ITEMS = $items, TAG = $tag;
setTimeout(function () {
  var shelf = document.getElementById('shelf');
  shelf.textContent = '';
  ITEMS.forEach(function (entry) {
    var element = document.createElement(TAG);
    if (TAG === 'a') { element.className = 'category'; element.href = entry[1];
                       element.textContent = entry[0]; }
    else { element.className = 'product-photo'; element.src = entry[1]; }
    shelf.appendChild(element);
  });
}, 50);
</script></body></html>""")


def serve(handler: type[http.server.BaseHTTPRequestHandler],
          tls: ssl.SSLContext | None = None) -> http.server.ThreadingHTTPServer:
    """A server for `handler` on a free port of 127.0.0.1, answering from daemon threads."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago: nothing listens there (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@functools.cache
def bomb_png(side: int = 8_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels that compresses to a few kilobytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    compressor = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


class FakeWeb:
    """Start with `with FakeWeb(photos) as web:`; `web.url(path)` is an absolute URL."""

    def __init__(self, photos: Path, batch: int = 5, scrolls: int = 2,
                 item_height: int | None = 500) -> None:
        self.photos = {folder.name: sorted(p.name for p in folder.iterdir()
                                           if p.suffix.lower() in (".jpg", ".jpeg"))
                       for folder in sorted(photos.iterdir()) if folder.is_dir()}
        self._root = photos
        self.batch, self.scrolls, self.item_height = batch, scrolls, item_height
        self.image_delay = 0.0  # seconds before each photo is sent (simulated latency)
        self.beacon = ""  # a URL that result pages show as an <img>
        self._all_photos = [f"{name}/{file}" for name, files in self.photos.items()
                            for file in files]
        self.active = self.peak = 0  # photo requests being answered now, and at most
        self.requests: list[str] = []
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), path)
        self.authorizations: list[str] = []
        # /fault/slow-headers.jpg: seconds between two bytes of its headers (under the tests'
        # `timeout`, so that only the whole-file deadline can stop it), and the bytes it sent.
        self.header_byte_seconds = 0.2
        self.header_bytes_sent = 0
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set on exit: hanging handlers return
        self._cache: dict[str, bytes] = {}
        self.port = 0  # known once started (or set, to build URLs for a server elsewhere)

    def __enter__(self) -> FakeWeb:
        self._server = serve(_handler(self))
        self.port = self._server.server_port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        stop(self._server)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def image_url(self, name: str, index: int) -> str:
        return self.url(f"/img/{name}/{self.photos[name][index]}")

    def photo(self, name: str, index: int) -> bytes:
        return (self._root / name / self.photos[name][index]).read_bytes()

    def fault_urls(self) -> dict[str, str]:
        """Each fault's URL, by the kind of rejection expected (or `kept`)."""
        return {"flaky (kept)": self.url("/fault/flaky.jpg"),
                "slow (kept)": self.url("/fault/slow.jpg"),
                "http 404": self.url("/fault/missing.jpg"),
                "timeout": self.url("/fault/hang.jpg"),
                "too slow": self.url("/fault/trickle.jpg"),
                "too slow (headers)": self.url("/fault/slow-headers.jpg"),
                "cannot decode": self.url("/fault/truncated.jpg"),
                "truncated": self.url("/fault/short-body.jpg"),
                "html page": self.url("/fault/html.jpg"),
                "too large": self.url("/fault/huge.jpg"),
                "too many pixels": self.url("/fault/bomb.png"),
                "redirect loop": self.url("/fault/loop.jpg"),
                "not http(s)": f"ftp://127.0.0.1:{self.port}/img.jpg"}

    def results(self, query: str) -> list[str]:
        if query == "faults":
            return list(self.fault_urls().values()) + [self.image_url("daisy", i) for i in (0, 1)]
        if query == "gallery":
            return [self.url(f"/gallery/{i}.jpg") for i in range(GALLERY)]
        if query == "many":  # every tenth result is listed again, five places later
            urls = [self.many_url(i) for i in range(MANY)]
            return [url for i, url in enumerate(urls)
                    for url in ([url, urls[i - 5]] if i % 10 == 9 else [url])]
        if query not in self.photos:
            return []
        return [self.image_url(query, i) for i in range(SEARCH_SIZE)]

    def many_url(self, index: int) -> str:
        return self.url(f"/many/{index}.jpg")

    def many_similar(self, index: int) -> list[str]:
        """The similar page of the `many` result `index`: the next three search results (seen
        before), then three URLs of its own."""
        return ([self.many_url(index + k) for k in (1, 2, 3)]
                + [self.url(f"/many/similar-{index}-{k}.jpg") for k in range(3)])

    def similar(self, image: str) -> list[str]:
        """Different photos of the image's class for each of its first results."""
        parts = urllib.parse.urlsplit(image).path.split("/")  # /img/<class>/<file>
        if parts[:2] == ["", "gallery"]:
            index = parts[2].removesuffix(".jpg")
            return [self.url(f"/gallery/similar-{index}-{k}.jpg") for k in range(GALLERY)]
        if parts[:2] == ["", "many"] and parts[2].removesuffix(".jpg").isdigit():
            return self.many_similar(int(parts[2].removesuffix(".jpg")))
        if len(parts) != 4 or parts[2] not in self.photos:
            return []
        name, files = parts[2], self.photos[parts[2]]
        start = SEARCH_SIZE + files.index(parts[3]) * SIMILAR_SIZE // 2  # pages overlap a little
        return [self.image_url(name, i) for i in range(start, min(start + SIMILAR_SIZE,
                                                                  len(files)))]

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(n for path, n in self.hits.items() if path.startswith(prefix))

    def log(self, path: str, authorization: str | None) -> None:
        with self._lock:
            self.requests.append(path)
            self.arrivals.append((time.monotonic(), path))
            self.hits[path] += 1
            if authorization:
                self.authorizations.append(authorization)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def thumbnail(self, index: int) -> bytes:
        """The thumbnail of a result: a photo (one per index, in turn) THUMB_HEIGHT px high."""
        key = f"thumbs/{index % len(self._all_photos)}"
        if key not in self._cache:
            with Image.open(self._root / self._all_photos[index % len(self._all_photos)]) as image:
                image.thumbnail((THUMB_HEIGHT * 4, THUMB_HEIGHT))
                out = io.BytesIO()
                image.convert("RGB").save(out, "JPEG", quality=80)
            self._cache[key] = out.getvalue()
        return self._cache[key]

    def cached(self, relative: str) -> bytes | None:
        if relative not in self._cache:
            path = self._root / relative
            if ".." in relative or not path.is_file():
                return None
            self._cache[relative] = path.read_bytes()
        return self._cache[relative]


def _handler(web: FakeWeb) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm the second waits for
        # the client's delayed ACK (about 40 ms), a latency no real server adds.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            web.log(self.path, self.headers.get("Authorization"))
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            path = parts.path
            try:
                if path.startswith("/img/"):
                    self.photo(path[len("/img/"):])
                elif path.startswith("/thumbs/"):
                    self.thumb(path[len("/thumbs/"):])
                elif path in ("/images/search", "/legacy/images/search"):
                    self.search(query, legacy=path.startswith("/legacy"))
                elif path == "/showcaptcha":
                    self.send(200, "text/html; charset=utf-8", CAPTCHA_PAGE.encode())
                elif path.startswith("/catalogue/"):
                    self.catalogue(path[len("/catalogue/"):])
                elif path.startswith("/shop/"):
                    self.shop(path[len("/shop/"):])
                elif path.startswith("/fault/"):
                    self.fault(path[len("/fault/"):])
                elif path == "/redirect":
                    self.send(302, "text/html", b"", Location=query.get("to", "/"))
                elif path == "/wander":
                    script = (f"<script>setTimeout(function () {{ location.href = "
                              f"{json.dumps(query.get('to', '/'))}; }}, 50);</script>")
                    self.send(200, "text/html; charset=utf-8",
                              f"<html><body>{script}</body></html>".encode())
                else:
                    self.send(404, "text/html", b"<html><body>not found</body></html>")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should on the faults

        def send(self, status: int, content_type: str, body: bytes, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def photo(self, relative: str) -> None:
            data = web.cached(relative)
            if data is None:
                self.send(404, "text/html", b"<html><body>no such photo</body></html>")
                return
            with web.answering():
                time.sleep(web.image_delay)
                self.send(200, "image/jpeg", data)

        def thumb(self, name: str) -> None:
            index = name.removesuffix(".jpg")
            if not index.isdigit():  # the catalogue's thumbnails, which nothing reads
                self.send(404, "text/html", b"<html><body>no such thumbnail</body></html>")
                return
            self.send(200, "image/jpeg", web.thumbnail(int(index)))

        def search(self, query: dict[str, str], legacy: bool) -> None:
            if query.get("text") == "captcha":
                self.send(302, "text/html", b"", Location="/showcaptcha?retpath=x")
                return
            if query.get("rpt") == "imageview":
                results, title = web.similar(query.get("url", "")), "similar"
            else:
                results, title = web.results(query.get("text", "")), query.get("text", "")
            page = SEARCH_PAGE.substitute(
                title=title, more=MORE_BUTTONS[legacy], results=json.dumps(results),
                legacy=json.dumps(legacy), batch=web.batch, scrolls=web.scrolls,
                item_style=(f"display: block; height: {web.item_height}px;"
                            if web.item_height is not None  # else: the thumbnail's size
                            else "display: inline-block; vertical-align: top; margin: 4px;"),
                beacon=f'<img class="beacon" src="{web.beacon}">' if web.beacon else "")
            self.send(200, "text/html; charset=utf-8", page.encode())

        def catalogue(self, rest: str) -> None:
            if rest == "":
                links = "".join(f'<li><a class="gem" href="{name}.html">{name.title()}</a></li>'
                                for name in web.photos)
                body = (f'<html><body><a class="gem-nav" href="/">Home</a><ul class="gems">'
                        f'{links}<li><a class="gem" href="unknown.html">Unobtainium</a></li>'
                        f'<li><a class="gem" href="file:///etc/">Etc</a></li></ul></body></html>')
                self.send(200, "text/html; charset=utf-8", body.encode())
                return
            name = rest.removesuffix(".html")
            if name not in web.photos:
                self.send(404, "text/html", b"<html><body>no such gem</body></html>")
                return
            photos = "".join(f'<a class="full" href="/img/{name}/{file}">'
                             f'<img class="thumb" src="/thumbs/{file}"></a>'
                             for file in web.photos[name][CATALOGUE])
            body = f'<html><body><div class="photos">{photos}</div></body></html>'
            self.send(200, "text/html; charset=utf-8", body.encode())

        def shop(self, rest: str) -> None:
            if rest == "":
                items = [[name.title(), f"/shop/c/{name}"] for name in web.photos]
                items.append(["Etc", "file:///etc/"])
                tag = "a"
            elif rest.removeprefix("c/") in web.photos:
                name = rest.removeprefix("c/")
                items = [["", f"/img/{name}/{file}"] for file in web.photos[name][SHOP]]
                tag = "img"
            else:
                self.send(404, "text/html", b"<html><body>no such shelf</body></html>")
                return
            page = SHOP_PAGE.substitute(items=json.dumps(items), tag=json.dumps(tag))
            self.send(200, "text/html; charset=utf-8", page.encode())

        def fault(self, name: str) -> None:
            photo = web.photo("daisy", 0)
            if name == "flaky.jpg" and web.hits[self.path] == 1:
                self.send(500, "text/html", b"<html><body>try again</body></html>")
            elif name == "flaky.jpg":
                self.send(200, "image/jpeg", photo)
            elif name == "slow.jpg":
                self.trickle(photo, pieces=4, pause=0.05)
            elif name == "trickle.jpg":
                self.trickle(photo, pieces=len(photo) // 256, pause=0.05)
            elif name == "slow-headers.jpg":
                self.slow_headers(photo)
            elif name == "hang.jpg":
                web.stopping.wait(HANG_SECONDS)
            elif name == "truncated.jpg":
                self.send(200, "image/jpeg", photo[:len(photo) // 2])
            elif name == "short-body.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(photo)))
                self.end_headers()
                self.wfile.write(photo[:len(photo) // 2])
                self.close_connection = True
            elif name == "html.jpg":
                self.send(200, "image/jpeg", b"<!DOCTYPE html><html><body>Access denied"
                                             b"</body></html>")
            elif name == "huge.jpg":
                self.endless()
            elif name == "bomb.png":
                self.send(200, "image/png", bomb_png())
            elif name == "loop.jpg":
                self.send(302, "text/html", b"", Location="/fault/loop-back.jpg")
            elif name == "loop-back.jpg":
                self.send(302, "text/html", b"", Location="/fault/loop.jpg")
            else:
                self.send(404, "text/html", b"<html><body>no such fault</body></html>")

        def trickle(self, data: bytes, pieces: int, pause: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            size = -(-len(data) // pieces)
            for start in range(0, len(data), size):
                self.wfile.write(data[start:start + size])
                self.wfile.flush()
                if web.stopping.wait(pause):
                    return

        def slow_headers(self, data: bytes) -> None:
            """A whole response whose status line and headers come one byte at a time."""
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n").encode()
            self.close_connection = True
            for index in range(len(head)):
                try:
                    self.wfile.write(head[index:index + 1])
                    self.wfile.flush()
                except OSError:  # the client hung up
                    return
                with web._lock:
                    web.header_bytes_sent += 1
                if web.stopping.wait(web.header_byte_seconds):
                    return
            self.wfile.write(data)

        def endless(self) -> None:
            """A JPEG header and then zeros, without a length, until the client hangs up."""
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(web.photo("daisy", 0)[:2])
            block = bytes(256 * 1024)
            for _ in range(400):  # 100 MB at most
                self.wfile.write(block)

    return Handler



def _certificates(name: str, folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for `name` (and nothing else) signed by it:
    the paths of the CA's certificate, the server's certificate and its key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgclf test CA")])

    def certificate(subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), False))
    usage = dict(digital_signature=True, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, encipher_only=False,
                 decipher_only=False)
    ca = (certificate(ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
          .add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), True)
          .sign(ca_key, hashes.SHA256()))
    server = (certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                          key.public_key())
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
              .add_extension(x509.KeyUsage(key_cert_sign=False, crl_sign=False, **usage), True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class TlsServer:
    """HTTPS on 127.0.0.1 with a certificate for `name` only, serving one photo at
    `/img/daisy/<photo_name>`; `sni_names` lists the server names clients asked for."""

    def __init__(self, photos: Path, name: str, folder: Path) -> None:
        self.photo_name = sorted(p.name for p in (photos / "daisy").glob("*.jpg"))[0]
        self._photo = (photos / "daisy" / self.photo_name).read_bytes()
        self.ca_file, self._cert_file, self._key_file = _certificates(name, folder)
        self.sni_names: list[str | None] = []
        self.port = 0

    def __enter__(self) -> TlsServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert_file, self._key_file)
        context.sni_callback = lambda sock, server_name, ctx: self.sni_names.append(server_name)
        photo, path = self._photo, f"/img/daisy/{self.photo_name}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                found = self.path == path
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(photo) if found else 0))
                self.end_headers()
                self.wfile.write(photo if found else b"")

        self._server = serve(Handler, context)
        self.port = self._server.server_port
        return self

    def __exit__(self, *exc_info: object) -> None:
        stop(self._server)


def with_trusted_ca(ca_file: Path) -> Callable[..., requests.Session]:
    """A stand-in for `transport.new_session` whose sessions trust `ca_file` (and only it)."""
    from imgclf.sources.http.transport import new_session

    def build(*args: Any, **kwargs: Any) -> requests.Session:
        session = new_session(*args, **kwargs)
        session.verify = str(ca_file)
        return session
    return build


def local_settings(web: FakeWeb) -> dict[str, Any]:
    """`scrape.*` values for tests: this server (allowed although it is on 127.0.0.1), tiny
    timeouts and waits, a local-only browser."""
    return {"search_url": web.url("/images/search"), "per_class": 100, "similar_from": 0,
            "similar_per_result": 0, "workers": 4, "timeout": 0.5, "file_timeout": 1.5,
            "retries": 1, "backoff": 0.01, "host_delay": 0.0, "max_bytes": 2_000_000,
            "page_timeout": 10.0, "render_wait": 0.3, "local_only": True,
            "allow_private": True,  # the fake web is on 127.0.0.1
            "catalogue": {"url": web.url("/catalogue/"), "class_links": "a.gem",
                          "images": "div.photos a.full"},
            "shop": {"url": web.url("/shop/"), "class_links": "a.category",
                     "images": "img.product-photo"}}


def write_classes(path: Path, names: list[str]) -> Path:
    """A class list whose queries are the names (the server's class folders)."""
    path.write_text("name,label\n" + "".join(f"{name},{label}\n"
                                             for label, name in enumerate(names)),
                    encoding="utf-8")
    return path
