"""Fetching a query image from a URL a client gave, without becoming a proxy into the intranet.

A server that fetches any URL it is handed lets a client reach what only the server can reach
(cloud metadata at 169.254.169.254, admin pages on loopback, hosts on the private network). So:
only http(s); the host name is resolved once and every address is checked; the connection goes
to the address that was checked (a second DNS answer cannot swap in a private one: no DNS
rebinding); redirects are followed by hand, each one checked the same way; size and total time
are bounded. `allow_private=True` lifts the address check, for tests and intranets.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 5
CHUNK = 64 * 1024


class UrlFetchError(Exception):
    """A URL that was refused or could not be fetched; the message says which and why."""

    def __init__(self, message: str, *, too_large: bool = False, timed_out: bool = False):
        super().__init__(message)
        self.too_large = too_large
        self.timed_out = timed_out


def default_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlFetchError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    out: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in out:
            out.append(address)
    return out


# Ranges that `is_global` let through on some Python versions, or that reach a private host
# through a translation; named here so the rule does not depend on the interpreter.
NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.8 passed is_global)
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses only: loopback, private (RFC 1918, ULA),
    link-local, carrier-grade NAT, multicast, reserved, documentation, unspecified and the
    IETF blocks are refused, and so is any IPv6 form that carries a refused IPv4 address
    (IPv4-mapped, NAT64, 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return public_address(ip.ipv4_mapped)
        if ip in NAT64:
            return public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            return public_address(ip.sixtofour)
    if any(ip in net for net in NOT_PUBLIC if net.version == ip.version):
        return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch: bytes, seconds in all (redirects included), which addresses."""

    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    allow_private: bool = False
    address_allowed: Callable[[IPAddress], bool] = public_address
    resolve: Resolver = default_resolve

    def allowed(self, ip: IPAddress) -> bool:
        return self.allow_private or self.address_allowed(ip)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed, already checked address, whatever `host` resolves to."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address; the certificate is still checked against the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def check_url(url: str, policy: FetchPolicy) -> tuple[str, str, int, str, str]:
    """Validate a URL and pick the address to connect to: (scheme, host, port, address, target).

    Refuses anything but http(s), user:password@ URLs, and hosts with any refused address."""
    if len(url) > 2048:
        raise UrlFetchError("URL is longer than 2048 characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlFetchError(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlFetchError(
            f"only http and https URLs can be fetched, not {scheme or 'a URL without a scheme'}"
        )
    host = parts.hostname
    if not host:
        raise UrlFetchError("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlFetchError("URLs with a user name or password are not fetched")
    port = port or (443 if scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal is not None else policy.resolve(host, port)
    if not addresses:
        raise UrlFetchError(f"host {host!r} has no address")
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not policy.allowed(ip):
            raise UrlFetchError(
                f"refused to fetch {host}: it resolves to {address}, a private, loopback, "
                "link-local or otherwise non-public address (the server's allow_private_urls "
                "setting permits these)"
            )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, host, port, addresses[0], target


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """GET `url` under `policy`, following up to five checked redirects; the body's bytes.

    A watchdog shuts the socket at the deadline, so a server trickling headers or body one
    byte at a time cannot hold the fetch past `timeout_s` (socket timeouts are per read)."""
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, address, target = check_url(current, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(url, policy)
        kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        conn = kind(host, port, address, timeout=remaining)
        expired = threading.Event()
        watchdog = threading.Timer(remaining, _abort, args=(conn, expired))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request(
                "GET", target, headers={"User-Agent": "lookalike/0.1", "Accept": "image/*"}
            )
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise UrlFetchError(f"{current} redirected without a Location")
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise UrlFetchError(f"{current} answered HTTP {response.status}")
            data = _read_bounded(response, current, policy, deadline)
            if expired.is_set():  # the watchdog's shutdown reads as an early end of body
                raise _timeout(url, policy)
            return data
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise _timeout(url, policy) from None
            raise UrlFetchError(f"cannot fetch {current}: {exc}") from None
        finally:
            watchdog.cancel()
            conn.close()
    raise UrlFetchError(f"{url} redirected more than {MAX_REDIRECTS} times")


def _timeout(url: str, policy: FetchPolicy) -> UrlFetchError:
    return UrlFetchError(f"fetching {url} took longer than {policy.timeout_s:g} s", timed_out=True)


def _abort(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    """Watchdog: unblock any pending read on the connection's socket."""
    expired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_bounded(
    response: http.client.HTTPResponse, url: str, policy: FetchPolicy, deadline: float
) -> bytes:
    """The body, refused as soon as it is known to exceed the limit (header or count)."""
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise UrlFetchError(
            f"{url} is {int(declared):,} bytes, over the limit of {policy.max_bytes:,}",
            too_large=True,
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise _timeout(url, policy)
        chunk = response.read1(CHUNK)  # returns what one read gives: no waiting for a full chunk
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise UrlFetchError(
                f"{url} sent more than the limit of {policy.max_bytes:,} bytes", too_large=True
            )
        chunks.append(chunk)
    return b"".join(chunks)
