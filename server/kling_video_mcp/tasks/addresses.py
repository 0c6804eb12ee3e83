"""Where a clip download may connect: public addresses, unless the provider itself is local.

A result URL comes from the provider, so a faulty or hostile one could point the server at
``http://169.254.169.254/latest/meta-data`` or a service on its own loopback and have the
answer saved, and over HTTP served, as a "clip". Downloads therefore go only to ``http(s)``
URLs whose *connected* address is public: a name can resolve to something else by the time we
connect, so the address the socket reached is checked, not just the name. A provider whose
own base URL is loopback or private (the emulator, a local proxy) may hand out loopback and
private links; ``KLING_MCP_ALLOW_PRIVATE_DOWNLOADS`` overrides either way. Link-local
addresses (cloud metadata services) are never reached unless that setting says ``true``.

Classification is the standard library's :mod:`ipaddress` (its ``is_global`` follows the IANA
special-purpose registries). Through an HTTP proxy the connected address is the proxy's: with
a proxy on a private address, set ``KLING_MCP_ALLOW_PRIVATE_DOWNLOADS=true``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

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

    def url_problem(self, url: str) -> str | None:
        """Why an ``http(s)`` ``url`` may not be fetched, judged before connecting (a literal address)."""
        parts = urlsplit(url)
        if (address := parse_address(parts.hostname or "")) is not None and not self.allows(address):
            return f"it points at {address}, {self._kind(address)}"
        return None

    def address_problem(self, connected: str | None) -> str | None:
        """Why the address a response came from may not be used, if it may not."""
        if self.reach == "any":
            return None
        address = parse_address(connected or "")
        if address is None:
            return "the address it connected to could not be read"
        if not self.allows(address):
            return f"it connected to {address}, {self._kind(address)}"
        return None

    @staticmethod
    def _kind(address: IPAddress) -> str:
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address (such as a cloud metadata service)"
        return "a private or reserved address"
