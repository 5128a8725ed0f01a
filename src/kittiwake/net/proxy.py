"""The PROXY protocol header, versions 1 (text) and 2 (binary), parsed from bytes alone.

Owns ``parse_header``: given the first bytes of a connection it returns a ``ProxyHeader``
(how many octets it took and the client/server addresses it carries), ``None`` while the
bytes so far are a proper prefix of a header, or raises ``ProxyError``. No I/O here:
``kittiwake.net.proxy_listen`` feeds it from the socket. Written from HAProxy's
specification (doc/proxy-protocol.txt, "Versions 1 & 2", 2020/03/05; section numbers below
are that document's).

Security: HIGH. This header decides the client address every check, log line and trace
header uses; a parser that guessed would let a client spoof it. So the rules are strict
(§2.1: "any sequence which does not exactly match the protocol must be discarded"):

* v1 is US-ASCII ``PROXY TCP4|TCP6 src dst sport dport\\r\\n`` with exactly one space
  between fields, canonical addresses of the announced family (no leading zeros in IPv4
  or ports, no zone ids, no IPv4-in-IPv6 dotted form), at most 107 octets with the CRLF,
  and only CRLF ends it (a lone CR or LF is an error). ``PROXY UNKNOWN`` ignores the rest
  of its line and means "use the real connection's addresses".
* v2 is the 12-octet signature, version 2 (any other is an error), command LOCAL (use the
  real addresses; the address block is skipped whatever its family) or PROXY, then a
  family/protocol octet and a length. TCP over IPv4/IPv6 gives the addresses; the other
  valid combinations (UNSPEC, UDP, AF_UNIX) fall back to the real addresses as §2.2
  allows; invalid family or protocol nibbles are errors. TLVs after the addresses are
  kept as raw octets and otherwise ignored (no CRC32C check: §2.2.3 makes it optional).
* A prefix that can no longer become a header (``EHLO``, a TLS ClientHello) fails at
  once, without waiting for more bytes.

Anything in, either a header, ``None`` or ``ProxyError`` out: never another exception
(tests/unit/test_proxy_fuzz.py says so with hypothesis).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

from kittiwake.errors import RemoteProtocolError

V1_PREFIX = b"PROXY "
V1_MAX = 107  # §2.1: the worst case, "PROXY UNKNOWN <ipv6> <ipv6> 65535 65535\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # §2.2
V2_FIXED = 16  # signature, ver_cmd, fam, len
V2_MAX = V2_FIXED + 0xFFFF
MAX_HEADER = V2_MAX  # no header is ever longer than this

_V1_FAMILIES = (b"TCP4", b"TCP6", b"UNKNOWN")
_V1_RE = re.compile(rb"PROXY (TCP4|TCP6) (\S+) (\S+) (\S+) (\S+)")
_V1_PORT_RE = re.compile(rb"0|[1-9][0-9]{0,4}")
_IPV4_RE = re.compile(
    rb"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_IPV6_RE = re.compile(rb"[0-9A-Fa-f:]{2,39}")

_CMD_LOCAL, _CMD_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_PROTO_UNSPEC, _PROTO_STREAM, _PROTO_DGRAM = 0x0, 0x1, 0x2
_ADDRESS_LENGTH = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}  # §2.2, per family

Endpoint = tuple[str, int]


class ProxyError(RemoteProtocolError):
    """The peer sent no valid PROXY header; the connection must be closed unanswered."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header.

    ``source``/``destination`` are the proxied client and server endpoints, or both None
    when the header says to use the real connection's (v1 ``UNKNOWN``, v2 ``LOCAL``, or a
    v2 family we do not take addresses from). ``length`` is the header's size on the wire;
    the SMTP (or TLS) stream starts right after it. ``tlvs`` are v2's extra octets, raw.
    """

    version: int
    length: int
    source: Endpoint | None = None
    destination: Endpoint | None = None
    tlvs: bytes = b""

    @property
    def local(self) -> bool:
        """True when the real connection's endpoints apply (no proxied addresses)."""
        return self.source is None


def parse_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; ``None`` if more octets are needed.

    Octets after the header are not looked at (they belong to the protocol that follows).
    Raises ``ProxyError`` as soon as ``data`` cannot be the beginning of a header.
    """
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    return _parse_v1(data)


# ---------------------------------------------------------------------------------- v1


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        raise ProxyError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)  # the CRLF must lie within the first 107 octets
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError(f"PROXY v1 line longer than {V1_MAX} octets")
        pending = data[:-1] if data.endswith(b"\r") else data  # the CRLF may be split
        _check_v1_text(pending)
        _check_v1_family(pending)
        return None
    line = data[:end]
    _check_v1_text(line)
    _check_v1_family(line)
    length = end + 2
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        return ProxyHeader(version=1, length=length)  # §2.1: ignore the rest of the line
    m = _V1_RE.fullmatch(line)
    if m is None:
        raise ProxyError(f"malformed PROXY v1 line {_show(line)}")
    family, src, dst, sport, dport = m.groups()
    return ProxyHeader(
        version=1,
        length=length,
        source=(_v1_address(family, src), _v1_port(sport)),
        destination=(_v1_address(family, dst), _v1_port(dport)),
    )


def _check_v1_text(text: bytes) -> None:
    """US-ASCII, and no CR or LF before the CRLF (§2.1: a lone CR or LF never ends it)."""
    if b"\r" in text or b"\n" in text:
        raise ProxyError("PROXY v1 line not ended by CRLF")
    if not text.isascii():
        raise ProxyError("PROXY v1 line is not US-ASCII")


def _check_v1_family(text: bytes) -> None:
    """Fail early when the protocol word after ``PROXY `` cannot be TCP4, TCP6 or UNKNOWN."""
    word, space, _ = text[len(V1_PREFIX) :].partition(b" ")
    if space or len(text) > len(V1_PREFIX) + 7:
        if word not in _V1_FAMILIES:
            raise ProxyError(f"unknown PROXY v1 protocol {_show(word)}")
    elif not any(f.startswith(word) for f in _V1_FAMILIES):
        raise ProxyError(f"unknown PROXY v1 protocol {_show(word)}")


def _v1_address(family: bytes, text: bytes) -> str:
    """A canonical address of the announced family (§2.1); never a zone id or dotted v6."""
    if family == b"TCP4":
        if _IPV4_RE.fullmatch(text) is None:
            raise ProxyError(f"bad IPv4 address {_show(text)} in PROXY v1 line")
        return str(ipaddress.IPv4Address(text.decode("ascii")))
    if _IPV6_RE.fullmatch(text) is None:
        raise ProxyError(f"bad IPv6 address {_show(text)} in PROXY v1 line")
    try:
        return str(ipaddress.IPv6Address(text.decode("ascii")))
    except ValueError:
        raise ProxyError(f"bad IPv6 address {_show(text)} in PROXY v1 line") from None


def _v1_port(text: bytes) -> int:
    if _V1_PORT_RE.fullmatch(text) is None or int(text) > 65535:
        raise ProxyError(f"bad port {_show(text)} in PROXY v1 line")
    return int(text)


# ---------------------------------------------------------------------------------- v2


def _parse_v2(data: bytes) -> ProxyHeader | None:
    head = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(head):
        raise ProxyError("not a PROXY protocol header")
    command = _check_version(data[12]) if len(data) > 12 else None
    if len(data) > 13 and (data[13] >> 4 > _AF_UNIX or data[13] & 0x0F > _PROTO_DGRAM):
        raise ProxyError(f"invalid PROXY v2 family/protocol 0x{data[13]:02x}")
    if len(data) < V2_FIXED:
        return None
    (size,) = struct.unpack_from("!H", data, 14)
    length = V2_FIXED + size
    if len(data) < length:
        return None
    block = data[V2_FIXED:length]
    family, proto = data[13] >> 4, data[13] & 0x0F
    if command == _CMD_LOCAL:  # §2.2: real endpoints; skip the block whatever it holds
        return ProxyHeader(version=2, length=length)
    need = _ADDRESS_LENGTH.get(family, 0)
    if size < need:
        raise ProxyError(f"PROXY v2 address block of {size} octets, family needs {need}")
    tlvs = block[need:]
    if proto != _PROTO_STREAM or family not in (_AF_INET, _AF_INET6):
        # UNSPEC, UDP, AF_UNIX: valid, but no TCP client address to take (§2.2 allows
        # falling back to the real connection's endpoints).
        return ProxyHeader(version=2, length=length, tlvs=tlvs)
    if family == _AF_INET:
        src4, dst4 = ipaddress.IPv4Address(block[0:4]), ipaddress.IPv4Address(block[4:8])
        sport, dport = struct.unpack_from("!HH", block, 8)
        return ProxyHeader(2, length, (str(src4), sport), (str(dst4), dport), tlvs)
    src6, dst6 = ipaddress.IPv6Address(block[0:16]), ipaddress.IPv6Address(block[16:32])
    sport, dport = struct.unpack_from("!HH", block, 32)
    return ProxyHeader(2, length, (str(src6), sport), (str(dst6), dport), tlvs)


def _check_version(ver_cmd: int) -> int:
    """The command of a version-2 ``ver_cmd`` octet; anything else is an error (§2.2)."""
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"unsupported PROXY protocol version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        raise ProxyError(f"unknown PROXY v2 command {command}")
    return command


def _show(data: bytes) -> str:
    """Peer octets for a log line: printable ASCII kept, the rest escaped, bounded."""
    return repr(data[:60])[1:] + ("..." if len(data) > 60 else "")
