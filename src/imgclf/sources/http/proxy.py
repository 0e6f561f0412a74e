"""A forward HTTP proxy on 127.0.0.1 that puts every request of the browser through the guard.

Chromium runs a page's scripts and loads what the page names: thumbnails, stylesheets, frames,
`fetch()` calls. Checking the URLs the browser navigates to cannot see those, so Chromium is
pointed at this proxy for everything, loopback included (`browser.proxy_flags`). For each
request the proxy resolves the host once through `AddressGuard.connect` and connects to the
address it checked, as the downloader does; a refused or unresolvable host gets an error
response and no connection. `CONNECT` (https, websockets) is checked the same way on its host and
port; the tunnel then carries TLS the proxy does not read.

One request per client connection: the request goes upstream with `Connection: close`, and the
answer is relayed until the server closes. That is slower than keeping connections alive, and
simple enough to read in one sitting.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import socketserver
import threading
import urllib.parse

from imgclf.sources.http.guard import DEFAULT_PORTS, AddressGuard, BlockedAddress

LISTEN = "127.0.0.1"
MAX_HEAD = 64 * 1024  # a request line and headers longer than this are refused
CHUNK = 64 * 1024
# Headers meant for the proxy itself, or that would keep the upstream connection open.
HOP_HEADERS = frozenset({b"proxy-connection", b"proxy-authorization", b"connection",
                         b"keep-alive"})


class _Refused(Exception):
    """The request is answered with `status` and the message, and goes nowhere."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GuardedProxy:
    """`with GuardedProxy(guard, timeout) as proxy:` (or `start()` and `close()`) listens on
    127.0.0.1:`proxy.port`.

    `timeout` bounds a connect and any silence on a relayed connection. `received` counts the
    bytes that came from upstream servers (what the browser cost in bandwidth)."""

    def __init__(self, guard: AddressGuard, timeout: float) -> None:
        self.guard = guard
        self.timeout = timeout
        self.received = 0
        self._lock = threading.Lock()
        self._server = _Server((LISTEN, 0), _handler(self))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"browser-proxy-{self.port}")

    def start(self) -> GuardedProxy:
        self._thread.start()
        return self

    def __enter__(self) -> GuardedProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def count(self, size: int) -> None:
        with self._lock:
            self.received += size

    def open_upstream(self, host: str, port: int) -> socket.socket:
        """A connection to a checked address of `host`; _Refused if the guard or the network
        says no."""
        try:
            upstream = self.guard.connect(host, port, self.timeout)
        except BlockedAddress as blocked:
            raise _Refused(403, str(blocked)) from None
        except socket.gaierror:
            raise _Refused(502, f"{host} does not resolve") from None
        except OSError as error:
            raise _Refused(502, f"cannot connect to {host}:{port}: "
                                f"{error.strerror or type(error).__name__}") from None
        if self._is_self(upstream):  # any spelling of this address: a request that loops
            upstream.close()
            raise _Refused(403, "the proxy does not connect to itself")
        return upstream

    def _is_self(self, upstream: socket.socket) -> bool:
        ip, port = upstream.getpeername()[:2]
        address = ipaddress.ip_address(ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return port == self.port and str(address) == LISTEN


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a tunnel left open by a browser that died does not hold the exit


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    """The request's head (up to the blank line) and the bytes read after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise _Refused(431, "request head too large")
        piece = client.recv(CHUNK)
        if not piece:
            raise ConnectionResetError("the client hung up before its request was complete")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _host_port(authority: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit("//" + authority)
    try:
        port = parts.port or default_port
    except ValueError:
        raise _Refused(400, f"bad port in {authority[:80]!r}") from None
    if not parts.hostname:
        raise _Refused(400, f"no host in {authority[:80]!r}")
    return parts.hostname, port


def _upstream_request(target: str, method: str, version: str,
                      headers: list[bytes]) -> tuple[str, int, bytes]:
    """Host, port and the head to send upstream for an absolute-form `target`."""
    parts = urllib.parse.urlsplit(target)
    if parts.scheme.lower() != "http":  # https goes through CONNECT; other schemes nowhere
        raise _Refused(400, f"not an http URL: {target[:80]}")
    host, port = _host_port(parts.netloc.rpartition("@")[2], DEFAULT_PORTS["http"])
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    kept = [line for line in headers
            if line.split(b":", 1)[0].strip().lower() not in HOP_HEADERS]
    head = b"\r\n".join([f"{method} {path} {version}".encode("latin-1"), *kept,
                         b"Connection: close"]) + b"\r\n\r\n"
    return host, port, head


def _handler(proxy: GuardedProxy) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            client: socket.socket = self.request
            client.settimeout(proxy.timeout)
            try:
                upstream = self._open(client)
            except _Refused as refused:
                self._answer(client, refused.status, str(refused))
                return
            except OSError:  # the client went away or fell silent: nothing to answer
                return
            with upstream:
                self._relay(client, upstream)

        def _open(self, client: socket.socket) -> socket.socket:
            head, rest = _read_head(client)
            request_line, *headers = head.split(b"\r\n")
            try:
                method, target, version = request_line.decode("latin-1").split(" ")
            except ValueError:
                raise _Refused(400, "malformed request line") from None
            if method.upper() == "CONNECT":
                upstream = proxy.open_upstream(*_host_port(target, DEFAULT_PORTS["https"]))
                client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                if rest:  # a client that did not wait for the answer
                    upstream.sendall(rest)
                return upstream
            host, port, upstream_head = _upstream_request(target, method, version, headers)
            upstream = proxy.open_upstream(host, port)
            upstream.sendall(upstream_head + rest)
            return upstream

        @staticmethod
        def _answer(client: socket.socket, status: int, message: str) -> None:
            body = f"imgclf browser proxy: {message}\n".encode()
            head = (f"HTTP/1.1 {status} Refused\r\n"
                    f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            with contextlib.suppress(OSError):
                client.sendall(head + body)

        @staticmethod
        def _relay(client: socket.socket, upstream: socket.socket) -> None:
            """Copy both ways until one side closes or both are silent for `timeout`."""
            peers = {client: upstream, upstream: client}
            while True:
                ready, _, _ = select.select(list(peers), [], [], proxy.timeout)
                if not ready:
                    return
                for sock in ready:
                    try:
                        data = sock.recv(CHUNK)
                        if not data:
                            return
                        peers[sock].sendall(data)
                    except OSError:
                        return
                    if sock is upstream:
                        proxy.count(len(data))

    return Handler
