"""Where a clip download may connect: public addresses, unless the provider itself is local.

A result URL comes from the provider, so a faulty or hostile one could point the server at
``http://169.254.169.254/latest/meta-data`` or a service on its own loopback and have the
answer saved, and over HTTP served, as a "clip". Even a refused answer is too late: the GET
itself may do harm (a blind request to a local service). Downloads therefore go only to
``http(s)`` URLs, and every connection is made by :class:`CheckedBackend` (httpcore's network
backend hook): it resolves the host name itself, refuses the connection unless *every* address
the name resolves to is allowed, and connects to the checked address, never to the name (which
could resolve to something else a moment later: DNS rebinding). So no byte is sent to a refused
address, whether the name is ``localhost``, ``127.1``, ``2130706433`` or a redirect's host.

A provider whose own base URL is loopback or private (the emulator, a local proxy) may hand out
loopback and private links; ``KLING_MCP_ALLOW_PRIVATE_DOWNLOADS`` overrides either way. Link-local
addresses (cloud metadata services) are never reached unless that setting says ``true``.

Classification is the standard library's :mod:`ipaddress` (its ``is_global`` follows the IANA
special-purpose registries). A checked download connects directly, so it does not go through
``HTTP(S)_PROXY``: behind a proxy, set ``KLING_MCP_ALLOW_PRIVATE_DOWNLOADS=true`` (the proxy is
then what is connected to, and its own rules apply).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import anyio
import httpcore2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Reach = Literal["public", "local", "any"]
"""``public``: global addresses only; ``local``: also loopback and private; ``any``: everything."""

def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (IPv4-mapped IPv6 as the IPv4 it maps), or ``None``."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def _is_local(address: IPAddress) -> bool:
    """Loopback or private, but not link-local, unspecified or multicast."""
    return (address.is_loopback or address.is_private) and not (
        address.is_link_local or address.is_unspecified or address.is_multicast
    )


def host_is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (no name is resolved)."""
    address = parse_address(host)
    return host.lower().rstrip(".") == "localhost" or (address is not None and address.is_loopback)


def host_is_local(host: str) -> bool:
    """Whether ``host`` (a name or address) is loopback or private; names are resolved (blocks)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    if (address := parse_address(host)) is not None:
        return not is_public(address)
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = [parse_address(str(info[4][0])) for info in infos]
    return bool(addresses) and all(address is not None and not is_public(address) for address in addresses)


def provider_reach(base_url: str, setting: bool | None) -> Reach:
    """The reach for downloads of a provider at ``base_url`` (resolves its name: blocks).

    ``setting`` is ``KLING_MCP_ALLOW_PRIVATE_DOWNLOADS``: ``True`` any address, ``False``
    public only, ``None`` local too when the provider's own host is loopback or private.
    """
    if setting is not None:
        return "any" if setting else "public"
    return "local" if host_is_local(urlsplit(base_url).hostname or "") else "public"


@dataclass(frozen=True)
class AddressPolicy:
    """Which URLs and connected addresses one provider's downloads may use."""

    reach: Reach = "public"

    def allows(self, address: IPAddress) -> bool:
        if self.reach == "any" or is_public(address):
            return True
        return self.reach == "local" and _is_local(address)

    def address_problem(self, host: str, address: IPAddress) -> str | None:
        """Why a connection to ``host`` may not go to ``address`` (one it resolves to), if it may not."""
        if self.allows(address):
            return None
        return f"its host {host!r} would have connected to {address}, {self._kind(address)}"

    @staticmethod
    def _kind(address: IPAddress) -> str:
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address (such as a cloud metadata service)"
        return "a private or reserved address"


class AddressRefused(Exception):
    """A connection was refused before any byte was sent; ``problem`` says why (see :class:`AddressPolicy`)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class CheckedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses ``policy`` allows.

    httpcore asks it for a TCP connection to the URL's host and port. The host is resolved here
    (``anyio.getaddrinfo``, the system resolver), every address it gives is checked, and the
    connection goes to the checked addresses in turn, never to the name. TLS is unaffected: httpcore
    verifies the certificate against the URL's host name, not the address connected to.

    Raises (from ``connect_tcp``):
        AddressRefused: one of the addresses is not allowed (nothing was connected or sent).
        httpcore2.ConnectError, httpcore2.ConnectTimeout: the name does not resolve, or no
            address accepts the connection in time.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._backend = httpcore2.AnyIOBackend()

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"{host!r} could not be resolved ({exc})") from exc
        found = [parse_address(str(info[4][0])) for info in infos]
        return list(dict.fromkeys(address for address in found if address is not None))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._addresses(host, port)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"resolving {host!r} timed out") from exc
        if not addresses:
            raise httpcore2.ConnectError(f"{host!r} resolves to no address")
        for address in addresses:
            if (problem := self.policy.address_problem(host, address)) is not None:
                raise AddressRefused(problem)
        failure: httpcore2.ConnectError | httpcore2.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise AddressRefused("it names a Unix socket, not a network address")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
