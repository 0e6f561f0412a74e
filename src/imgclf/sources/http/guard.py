"""Where the web sources may connect: the defence against server-side request forgery.

A web page chooses the URLs this project fetches (image links, class links, redirects). Without a
check, a public page could make a scrape read a router's admin page, a cloud metadata endpoint or
a database console on the scraping machine's network, and store the answer in data/raw. So every
connection goes through `AddressGuard.connect`: it resolves the host once, refuses the connection
if any of its addresses is loopback, private, link-local, multicast, reserved, unspecified or
otherwise not globally routable (IPv4-mapped IPv6 addresses are judged as the IPv4 address they
carry), and connects to an address it checked — never to a name that DNS could answer differently
the second time.

`scrape.allow_private` lifts the rules for loopback, private, link-local and shared address
space (intranet catalogues, tests); multicast, reserved and unspecified addresses stay refused:
no web server lives there.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from typing import Sequence, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
WEB_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# The rules that `scrape.allow_private` lifts; the others are never allowed.
PRIVATE_RULES = frozenset({"loopback", "private", "link-local", "site-local",
                           "not globally routable"})
# Checked in this order, so an address gets its most telling name (127.0.0.1 is also private,
# 240.0.0.1 is also private to Python).
RULES = (("unspecified", lambda ip: ip.is_unspecified), ("loopback", lambda ip: ip.is_loopback),
         ("link-local", lambda ip: ip.is_link_local), ("multicast", lambda ip: ip.is_multicast),
         ("reserved", lambda ip: ip.is_reserved), ("private", lambda ip: ip.is_private),
         # fec0::/10, deprecated but still routed inside some networks; Python calls it global
         ("site-local", lambda ip: getattr(ip, "is_site_local", False)),
         # e.g. 100.64.0.0/10, the carrier-grade NAT space, which is neither private nor global
         ("not globally routable", lambda ip: not ip.is_global))


class BlockedAddress(Exception):
    """A connection the guard refuses. The message is the manifest's reason."""


def address_rule(ip: IPAddress) -> str | None:
    """The rule that makes `ip` no place for a scraper to connect to; None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_rule(ip.ipv4_mapped)  # ::ffff:127.0.0.1 reaches 127.0.0.1
    return next((rule for rule, applies in RULES if applies(ip)), None)


def scheme_refusal(url: str) -> str | None:
    """Why `url` is not fetched because of its scheme (file:, ftp:, data:, javascript:...)."""
    if urllib.parse.urlsplit(url).scheme.lower() not in WEB_SCHEMES:
        return f"not http(s): {url[:80]}"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal in any spelling resolves to itself);
    socket.gaierror when it resolves to none."""
    try:
        answers = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except UnicodeError as error:  # a name no DNS could hold, such as an empty label (a..b)
        raise socket.gaierror(socket.EAI_NONAME, f"not a host name: {error}") from None
    # The scope of a link-local IPv6 answer (fe80::1%eth0) is not part of the address.
    return list(dict.fromkeys(ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
                              for *_, sockaddr in answers))


class AddressGuard:
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def refusal(self, ip: IPAddress, port: int) -> str | None:
        """Why connecting to `ip` is refused, or None. (`port` is there for the tests, which
        can only use 127.0.0.1 and tell servers apart by their port.)"""
        rule = address_rule(ip)
        if rule is None or (self.allow_private and rule in PRIVATE_RULES):
            return None
        return f"{ip} is {rule}" + ("; set scrape.allow_private to allow" if rule in PRIVATE_RULES
                                    else " (never allowed)")

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of `host`, every one allowed. BlockedAddress if any is not (a name with
        one internal address among public ones is not trusted); socket.gaierror if none."""
        found = resolve(host, port)
        for ip in found:
            refusal = self.refusal(ip, port)
            if refusal:
                shown = "" if host.strip("[]") == str(ip) else f"{host} -> "
                raise BlockedAddress(f"blocked address: {shown}{refusal}")
        return found

    def connect(self, host: str, port: int, timeout: float | None,
                source_address: tuple[str, int] | None = None,
                socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
                ) -> socket.socket:
        """A socket connected to a checked address of `host`: each in turn until one answers."""
        last_error: OSError | None = None
        for ip in self.addresses(host, port):
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect((str(ip), port))
                return sock
            except OSError as error:
                sock.close()
                last_error = error
        assert last_error is not None  # getaddrinfo returns at least one address or raises
        raise last_error

    def url_refusal(self, url: str) -> str | None:
        """Why the browser must not open `url`, checked before it navigates and where it ended
        so that the refusal has a name (its proxy enforces the guard on every connection, see
        sources.http.proxy); None if allowed."""
        refusal = scheme_refusal(url)
        if refusal:
            return refusal
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
            self.addresses(parts.hostname or "", port)
        except BlockedAddress as blocked:
            return str(blocked)
        except ValueError:  # a port that is not a number or out of range
            return f"bad url: {url[:80]}"
        except OSError:  # socket.gaierror: the browser could not load it either
            return f"connection error: {parts.hostname} does not resolve"
        return None
