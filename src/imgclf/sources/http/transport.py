"""How the downloader's requests travel: only to checked addresses, within one deadline per file.

- `GuardedAdapter` mounts urllib3 connection classes whose `_new_conn` connects through
  `AddressGuard.connect` (resolve once, check, connect to the checked address). TLS still wraps
  the socket with the URL's host name, so SNI and the certificate check are unchanged. Every
  redirect hop is a new request, so it is checked the same way.
- `Fetch` is the fetch in progress on a thread: its guard, and a deadline for the whole file.
  A socket timeout bounds one read, so a server that sends a byte a second (headers or body)
  would hold a worker forever; at the deadline a watchdog shuts the fetch's sockets down, which
  ends any blocked read at once. Connections made outside a `Fetch` are refused (fail closed).
- `Backoff` waits what the documentation says: the n-th retry `backoff * 2^(n-1)` seconds
  (urllib3's own Retry waits 0 s before the first retry), and never past the deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import Retry

from imgclf.sources.http.guard import AddressGuard


class DeadlineExceeded(Exception):
    """The fetch's deadline passed (or would, before the next retry). Not an OSError, so that
    urllib3 does not retry it."""


class Fetch:
    """`with Fetch(guard, seconds):` around everything one URL needs (redirects, retries, body)."""

    _local = threading.local()

    def __init__(self, guard: AddressGuard, seconds: float) -> None:
        self.guard = guard
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = self._over = False
        self._watchdog = threading.Timer(seconds, self._expire)
        self._watchdog.daemon = True

    @classmethod
    def current(cls) -> Fetch:
        fetch = getattr(cls._local, "fetch", None)
        if fetch is None:
            raise RuntimeError("a connection outside `with Fetch(...)`: it would go unchecked")
        return fetch

    def __enter__(self) -> Fetch:
        self._local.fetch = self
        self._watchdog.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._watchdog.cancel()
        with self._lock:
            self._over = True  # a watchdog that fires now must not touch a pooled connection
        self._local.fetch = None

    @property
    def expired(self) -> bool:
        return self._expired

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline (at once if it has passed)."""
        with self._lock:
            if self._expired:
                _shut_down(sock)
            else:
                self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown: ssl.SSLSocket.shutdown would also drop the TLS object under
    # the reading thread. Either way the blocked read returns (end of stream or an error).
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _GuardedConnection:
    """What both connection classes add to urllib3's: the guard and the deadline."""

    host: str
    port: int
    timeout: Any
    sock: socket.socket | None
    source_address: tuple[str, int] | None
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        fetch = Fetch.current()
        remaining = fetch.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"no time left to connect to {self.host}")
        # The watchdog cannot end a connect in progress, so the connect timeout stops in time.
        timeout = (min(self.timeout, remaining) if isinstance(self.timeout, (int, float))
                   else remaining)
        try:  # the errors as urllib3's own _new_conn raises them, so that retries work the same
            sock = fetch.guard.connect(self.host, self.port, timeout, self.source_address,
                                       self.socket_options)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from error
        except OSError as error:
            raise NewConnectionError(self, f"failed to connect: {error}") from error
        fetch.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a pooled connection, made during an earlier fetch
            Fetch.current().watch(self.sock)
        super().request(*args, **kwargs)


class GuardedHTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPConnectionPool,
                                                   "https": GuardedHTTPSConnectionPool}


class Backoff(Retry):
    def get_backoff_time(self) -> float:
        # Failures since the last redirect, as urllib3 counts them; it returns 0 for the first.
        failures = len(list(itertools.takewhile(lambda attempt: attempt.redirect_location is None,
                                                reversed(self.history))))
        if failures == 0:
            return 0.0
        return min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))

    def sleep(self, response: urllib3.BaseHTTPResponse | None = None) -> None:
        # A server's Retry-After is ignored: it could stall a worker for hours.
        pause = self.get_backoff_time()
        if pause >= Fetch.current().remaining():
            raise DeadlineExceeded("no time left for another try")
        time.sleep(pause)


def new_session(retries: int, backoff: float) -> requests.Session:
    """A session whose connections go through the guard of the `Fetch` in progress."""
    retry = Backoff(total=retries, connect=retries, read=retries, status=retries, other=0,
                    backoff_factor=backoff, status_forcelist=(500, 502, 503, 504),
                    allowed_methods=frozenset({"GET"}),
                    raise_on_status=False,  # the last 5xx response comes back and is recorded
                    respect_retry_after_header=False)
    session = requests.Session()
    # No proxies or credentials from the environment (.netrc): a proxy would resolve and connect
    # to hosts itself, out of the guard's sight.
    session.trust_env = False
    for scheme in ("http://", "https://"):
        session.mount(scheme, GuardedAdapter(max_retries=retry))
    return session
