"""PROXY protocol headers as a load balancer sends them, for tests (v1 text, v2 binary).

Written from HAProxy's proxy-protocol.txt independently of ``kittiwake.net.proxy`` (a
parser bug must not hide behind the same bug here). Also ``start_proxied``: a daemon whose
listeners of the given roles expect PROXY headers from 127.0.0.1 (the start-up probe of
``tests.support.server`` then sends a v2 LOCAL header first). Not security sensitive (test
code); binds and connects to 127.0.0.0/8 only.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest

from tests.support import server as server_module
from tests.support.server import KittiwakeServer, MakeServer, deep_merge
from tests.support.smtpclient import Address, RawSMTP

SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
LOCAL, PROXY = 0x20, 0x21  # version 2 in the high nibble, then the command
TCP4, TCP6, UNSPEC = 0x11, 0x21, 0x00


def v1(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def v1_unknown(rest: str = "") -> bytes:
    return f"PROXY UNKNOWN{rest}\r\n".encode("ascii")


def v2(
    src: str,
    dst: str = "127.0.0.1",
    sport: int = 40000,
    dport: int = 25,
    *,
    tlvs: bytes = b"",
) -> bytes:
    """A v2 PROXY command for TCP over IPv4 or IPv6, with optional raw TLV octets."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4 and b.version == 6:
        a = ipaddress.IPv6Address(f"::ffff:{a}")
    if a.version == 6 and b.version == 4:
        b = ipaddress.IPv6Address(f"::ffff:{b}")
    fam = TCP6 if a.version == 6 else TCP4
    block = a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIGNATURE + bytes([PROXY, fam]) + struct.pack("!H", len(block)) + block


def v2_local(block: bytes = b"") -> bytes:
    """A v2 LOCAL command (a health check): use the connection's own addresses."""
    return SIGNATURE + bytes([LOCAL, UNSPEC]) + struct.pack("!H", len(block)) + block


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def proxied(addr: Address, header: bytes, *, source_ip: str = "127.0.0.1") -> RawSMTP:
    """A connection that sends ``header`` first (the greeting is not read yet)."""
    c = RawSMTP(addr, read_greeting=False, source_ip=source_ip)
    c.send(header)
    return c


def start_proxied(
    make_server: MakeServer,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, Any] | None = None,
    roles: tuple[str, ...] = ("mx",),
) -> KittiwakeServer:
    """A daemon with ``[proxy]`` on ``roles``, trusting 127.0.0.1 only (header timeout 1 s;
    ``overrides`` deep-merge on top)."""
    base = {"proxy": {"trusted": ["127.0.0.1/32"], "listeners": list(roles), "timeout": 1}}
    srv = make_server(deep_merge(base, overrides or {}), start=False)
    expecting = {getattr(srv, role) for role in roles}
    plain_probe = server_module._probe

    def probe(addr: Address, greet: bool) -> None:
        if addr not in expecting:
            return plain_probe(addr, greet)
        with RawSMTP(addr, timeout=2, read_greeting=False) as c:
            c.send(v2_local())
            if greet:
                c.read_reply().check(220)
                c.cmd("QUIT")

    monkeypatch.setattr(server_module, "_probe", probe)
    return srv.start()
