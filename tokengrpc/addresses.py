"""Client addresses: ``allowed_ips`` entries, gRPC peers and trusted proxies."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Peers whose ``x-forwarded-for`` we believe unless configured otherwise.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
MAX_ALLOWED_IPS = 100


def parse_allowed(entry: str) -> str:
    """Normalise one ``allowed_ips`` entry (an address or a CIDR range).

    Raises ValueError with a sentence a person can act on.
    """
    text = entry.strip()
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=True))
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError(
                f"{entry!r} has host bits set; write the network address of the range"
            ) from None
        raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def compile_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def address_allowed(address: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    """An empty list allows every address; otherwise the address must be inside one."""
    if not networks:
        return True
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


@functools.lru_cache(maxsize=4096)
def peer_address(peer: str) -> IPAddress | None:
    """The address of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return parse_address(rest.rpartition(":")[0])
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return parse_address(host.strip("[]").split("%", 1)[0])
    return None


class ClientAddressResolver:
    """Finds the real client behind a trusted proxy's ``x-forwarded-for``."""

    def __init__(self, trusted_proxies: Iterable[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        self._trusted = compile_networks(trusted_proxies)

    def resolve(self, peer: str, forwarded_for: str | None) -> IPAddress | None:
        # Unix-socket peers are local processes and so trusted like loopback.
        is_unix = peer.startswith("unix:")
        address = None if is_unix else peer_address(peer)
        trusted = is_unix or (
            address is not None
            and any(address.version == net.version and address in net for net in self._trusted)
        )
        if trusted and forwarded_for:
            return parse_address(forwarded_for.split(",", 1)[0])
        return address
