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
#: Longer than any address or CIDR range can be written (``::ffff:1.2.3.4/128``
#: is 26); checked before any parsing, so a huge string costs nothing.
MAX_ADDRESS_LENGTH = 64
#: ``x-forwarded-for`` entries examined from the right: more trusted hops than
#: any real chain of proxies has, and a bound on the work a header can cause.
MAX_FORWARDED_HOPS = 32
#: Answers :class:`ClientAddressResolver` remembers: a proxy or a client calls
#: from the same few peers with the same few chains, over and over.
_RESOLVED = 4096
#: Longer chains are walked every time, so the memory stays small (about 1 MB).
_REMEMBERED_CHAIN = 256


@functools.lru_cache(maxsize=_RESOLVED)
def address_text(address: IPAddress) -> str:
    """``str(address)``, which ``ipaddress`` rebuilds each time, once per address."""
    return str(address)


def parse_allowed(entry: str) -> str:
    """Normalise one ``allowed_ips`` entry (an address or a CIDR range).

    Raises ValueError with a sentence a person can act on; the sentence never
    repeats the entry, which may be anything a client pasted there.
    """
    if len(entry) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"is longer than any address or range ({MAX_ADDRESS_LENGTH} characters)")
    text = entry.strip()
    if "%" in text:
        raise ValueError("must not carry an IPv6 zone (%...)")
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=True))
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError("has host bits set; write the network address of the range") from None
        raise ValueError("is not an IP address or CIDR range") from None


def parse_address(text: str) -> IPAddress | None:
    """One address (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    if len(text) > MAX_ADDRESS_LENGTH:
        return None  # before the cache: it must never hold huge strings
    return _parse_address(text)


@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> IPAddress | None:
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


def forwarded_address(entry: str) -> IPAddress | None:
    """One ``x-forwarded-for`` entry: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]``, ``[::1]:80``, ``fe80::1%eth0``; None for anything else."""
    text = entry.strip()
    if len(text) > MAX_ADDRESS_LENGTH:
        return None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not _is_port(rest)):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        host, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
        text = host
    return parse_address(text.partition("%")[0])


def _is_port(text: str) -> bool:
    port = text[1:]
    return (
        text.startswith(":")
        and 0 < len(port) <= 5
        and port.isascii()
        and port.isdigit()
        and int(port) <= 65535
    )


class ClientAddressResolver:
    """Finds the real client behind trusted proxies' ``x-forwarded-for``.

    As nginx's ``real_ip_recursive``: each proxy appends the address it saw,
    so the list is read from the right, past every trusted proxy, and the
    first address that is not one is the client. Whatever lies left of that
    was written by the client itself and is never believed. An entry that is
    not an address ends the walk too: nothing left of it can be trusted, so
    the answer is the last trusted hop's own address (the safe side: an
    ``allowed_ips`` token then fails rather than passes).
    """

    def __init__(self, trusted_proxies: Iterable[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        self._trusted = compile_networks(trusted_proxies)
        self._remembered = functools.lru_cache(maxsize=_RESOLVED)(self._walk)

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(
            address.version == net.version and address in net for net in self._trusted
        )

    def resolve(self, peer: str, forwarded_for: str | None) -> IPAddress | None:
        """``forwarded_for``: every ``x-forwarded-for`` value, joined with commas in order."""
        if forwarded_for is not None and len(forwarded_for) > _REMEMBERED_CHAIN:
            return self._walk(peer, forwarded_for)
        return self._remembered(peer, forwarded_for)

    def _walk(self, peer: str, forwarded_for: str | None) -> IPAddress | None:
        # Unix-socket peers are local processes and so trusted like loopback.
        is_unix = peer.startswith("unix:")
        address = None if is_unix else peer_address(peer)
        if not forwarded_for or not (is_unix or self.trusts(address)):
            return address
        # rsplit with a limit: the unexamined rest stays one piece, never split.
        hops = forwarded_for.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]
        for entry in reversed(hops):
            hop = forwarded_address(entry)
            if hop is None:
                break  # garbage: keep the last trusted hop's address
            address = hop
            if not self.trusts(hop):
                break
        return address
