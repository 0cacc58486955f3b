"""Who the client is, when proxies stand in between (``X-Forwarded-*``).

Only a trusted peer's headers are believed. ``X-Forwarded-For`` is read from
the right, as nginx's ``real_ip_recursive`` does: each proxy appends the
address it saw, so the rightmost entries are the trusted proxies' own and
the leftmost are whatever the client chose to write. Walk leftwards past
trusted proxies and stop at the first address that is not one; an entry
that is not an address stops the walk too, as nothing left of it can be
believed. An entry is read as the service reads one (``tokengrpc.addresses``),
ports and brackets included, so both surfaces find the same client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tokengrpc.addresses import MAX_FORWARDED_HOPS, forwarded_address, parse_address

_HOST = re.compile(r"(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_PROTOS = {"http", "https"}


@dataclass(frozen=True, slots=True)
class Trust:
    """Which peers may tell us the real client (X-Forwarded-*)."""

    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    #: Answers by peer: the same few peers connect again and again, and
    #: parsing an address costs microseconds.
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    #: Clients by (peer, X-Forwarded-For): a proxy sends the same few chains
    #: over and over (short chains only, so the memory stays small).
    _walked: dict[tuple[str | None, str], str | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, ranges: Iterable[str]) -> Trust:
        return cls(tuple(ipaddress.ip_network(r, strict=False) for r in ranges))

    def trusts(self, host: str | None) -> bool:
        if host is None:
            return True  # a unix socket: a local process
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= 1024:
                self._known.clear()
            known = self._known[host] = self._check(host)
        return known

    def _check(self, host: str) -> bool:
        address = parse_address(host)
        if address is None:
            return False
        return any(address.version == n.version and address in n for n in self.proxies)


#: Longer X-Forwarded-For chains are walked every time, never remembered.
_REMEMBERED_CHAIN = 256


def client_address(peer: str | None, forwarded_for: str, trust: Trust) -> str | None:
    """The client's address: the peer, or what trusted proxies say they saw.

    ``forwarded_for`` is every X-Forwarded-For header joined in order.
    """
    if not forwarded_for or len(forwarded_for) > _REMEMBERED_CHAIN:
        return _walk(peer, forwarded_for, trust)
    key = (peer, forwarded_for)
    walked = trust._walked
    if key in walked:
        return walked[key]
    if len(walked) >= 4096:
        walked.clear()
    found = walked[key] = _walk(peer, forwarded_for, trust)
    return found


def _walk(peer: str | None, forwarded_for: str, trust: Trust) -> str | None:
    if not trust.trusts(peer) or not forwarded_for:
        return peer
    client = peer
    # rsplit with a limit reads only the tail: a long header costs no more.
    hops = forwarded_for.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]
    for entry in reversed(hops):
        address = forwarded_address(entry)
        if address is None:
            break  # garbage: nothing to its left can be believed
        client = str(address)
        if not trust.trusts(client):
            break
    return client


def nearest(value: str) -> str:
    """The rightmost entry of a comma-joined header: the one the nearest proxy wrote."""
    return value.rsplit(",", 1)[-1].strip()


def scheme_of(peer_trusted: bool, header: str, default: str) -> str:
    proto = nearest(header).lower() if peer_trusted and header else ""
    return proto if proto in _PROTOS else default


def host_of(peer_trusted: bool, forwarded_host: str, host: str) -> str:
    """The host for absolute URLs; a value that is not a host name is ignored."""
    if peer_trusted and forwarded_host:
        candidate = nearest(forwarded_host)
        if _HOST.fullmatch(candidate):
            return candidate
    return host if _HOST.fullmatch(host) else "localhost"
