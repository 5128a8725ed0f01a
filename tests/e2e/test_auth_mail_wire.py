"""Issue 5 checks on real mail, through the wire: a real ``SmtpServer`` with sessions in
process, the real cleanup and SQLite queue, the checks built by ``app_policy`` /
``policy.builtin`` and a ``TestDNS`` zone serving SPF, DKIM keys, DMARC and a DNSBL.
Client addresses come from a PROXY v1 header (127.0.0.1 is a trusted proxy), so one
loopback client can be "inside" or "outside" the SPF record.

Not through the daemon (``tests/support/server.py``): app.py's wiring is the lead's
(``app_policy.build_relay_policy``); the chain here is the one it builds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import pytest

from kittiwake.app_policy import build_intake, build_relay_policy
from kittiwake.cleanup.dkimsink import SigningIntake
from kittiwake.cleanup.rewrite import RewriteSettings
from kittiwake.cleanup.writer import Cleanup
from kittiwake.config import Config
from kittiwake.config_check import Table
from kittiwake.config_dkim import build_dkim, signer_for
from kittiwake.config_mta import DnsConfig, RelayConfig
from kittiwake.config_policy import PolicyConfig
from kittiwake.delivery.api import QueuedMessage
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.delivery.maildir import QUARANTINE_MARK, MaildirAgent
from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.errors import ConfigError
from kittiwake.net.dns import Resolver
from kittiwake.net.proxy_listen import ProxySettings
from kittiwake.policy import PolicyChain
from kittiwake.policy.arc import seal
from kittiwake.policy.authres import build_header
from kittiwake.policy.builtin import Services, bound_factories
from kittiwake.policy.dkim_sign import DkimKey, generate_key, public_record, sign, txt_record
from kittiwake.policy.message import MessageContext
from kittiwake.policy.networks import NOBODY, Networks
from kittiwake.policy.plugins import CheckSpec, PluginFactory, build_checks
from kittiwake.policy.ratelimit import MessageRate
from kittiwake.policy.recipients import Recipients
from kittiwake.policy.verdict import Verdict
from kittiwake.queue.sqlite import SQLiteStore
from kittiwake.smtpd.auth import NoUsers
from kittiwake.smtpd.datastage import QUARANTINE_HEADER
from kittiwake.smtpd.server import ConnectionLimits, SmtpServer
from kittiwake.smtpd.settings import ListenerSettings
from tests.support import proxyproto as pp
from tests.support.dns import TestDNS

KEY = generate_key("ed25519")
ARC_KEY = generate_key("rsa", 2048)  # dkimpy's ARC signer: RSA only
ZONE = """
a.test. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.a.test. IN TXT "v=DMARC1; p=reject"
q.test. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.q.test. IN TXT "v=DMARC1; p=quarantine"
5.100.51.198.bl.test. IN A 127.0.0.2
5.100.51.198.bl.test. IN TXT "listed for the test"
"""
INSIDE, OUTSIDE, LISTED = "192.0.2.10", "198.51.100.7", "198.51.100.5"
MYNET = "203.0.113.9"  # Services.exempt: like a [relay] mynetworks client


class LocalB:
    def is_local_domain(self, domain: str) -> bool:
        return domain == "b.test"

    def lookup(self, address: str) -> str | None:
        return address if address.endswith("@b.test") else None


class Boom:
    name = "boom"

    async def data(self, ctx: MessageContext) -> Verdict:
        raise RuntimeError("a broken plugin")


@pytest.fixture
def dns() -> Iterator[TestDNS]:
    with TestDNS(ZONE) as server:
        server.add(txt_record("a.test", "sel", public_record(KEY)))
        server.add(txt_record("fwd.test", "arc", public_record(ARC_KEY)))
        yield server


@dataclasses.dataclass
class World:
    port: int
    store: SQLiteStore
    queued: list[QueuedMessage]
    store_dir: Path

    def body(self, index: int = -1) -> bytes:
        with self.store.open_body(self.queued[index].queue_id) as stream:
            return stream.read()


async def _world(
    tmp_path: Path, dns: TestDNS, names: list[str], options: Mapping[str, Mapping[str, object]]
) -> AsyncIterator[World]:
    store = SQLiteStore(tmp_path / "q")
    await store.open()
    services = Services(
        dns.resolver(),
        "b.test",
        tmp_path,
        lambda s: s.client_ip == MYNET,
        store.greylist_state,
    )
    bound: dict[str, PluginFactory] = {
        **bound_factories(services),
        "recipients": lambda _o: Recipients(LocalB()),
        "boom": lambda _o: Boom(),
    }
    specs = [
        CheckSpec(n, index=i, options=MappingProxyType(dict(options.get(n, {}))))
        for i, n in enumerate(names)
    ]
    queued: list[QueuedMessage] = []
    settings = ListenerSettings(
        role="mx",
        proto=Config(hostname="b.test").proto_config(starttls_available=False),
        policy=PolicyChain(build_checks(specs, bound=bound)),
        intake=Cleanup(store, "b.test"),
        authenticator=NoUsers(),
        tls_context=None,
        command_timeout=10,
        data_timeout=10,
        on_queued=queued.append,
        spool_dir=tmp_path,
    )
    server = SmtpServer(ConnectionLimits())
    trusted = ProxySettings(Networks.parse(["127.0.0.1/32"]), timeout=2)
    listener = await server.listen("127.0.0.1", 0, settings, proxy=trusted)
    yield World(int(listener.sockets[0].getsockname()[1]), store, queued, tmp_path / "q")
    await server.shutdown(2)
    await store.close()


AUTH_CHECKS = ["dnsbl", "spf", "dkim", "arc", "dmarc", "authres", "recipients"]
DNSBL = {"dnsbl": {"zones": ["bl.test"]}}


@pytest.fixture
async def mx(tmp_path: Path, dns: TestDNS) -> AsyncIterator[World]:
    async for world in _world(tmp_path, dns, AUTH_CHECKS, DNSBL):
        yield world


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ip: str) -> tuple[Client, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pp.v1(ip, "::1" if ":" in ip else "127.0.0.1", sport=4000))
        return cls(reader, writer), await cls(reader, writer).reply()

    async def reply(self) -> bytes:
        text = b""
        while True:
            line = await self.reader.readline()
            text += line
            if len(line) < 4 or line[3:4] != b"-":
                return text

    async def ask(self, line: str | bytes) -> bytes:
        self.writer.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return await self.reply()

    def close(self) -> None:
        self.writer.close()


def message(author: str, signed: bool = False) -> bytes:
    msg = (
        f"From: <{author}>\r\nTo: <bob@b.test>\r\nSubject: hello\r\n"
        f"Message-ID: <1@{author.partition('@')[2]}>\r\n\r\nHi Bob.\r\n"
    ).encode()
    if signed:
        msg = (
            sign(
                msg,
                domain="a.test",
                selector="sel",
                private_key_pem=KEY,
                algorithm="ed25519-sha256",
            )
            + msg
        )
    return msg


async def send(port: int, ip: str, sender: str, msg: bytes) -> bytes:
    client, greeting = await Client.open(port, ip)
    assert greeting.startswith(b"220"), greeting
    try:
        assert (await client.ask("EHLO client.test")).startswith(b"250")
        assert (await client.ask(f"MAIL FROM:<{sender}>")).startswith(b"250")
        assert (await client.ask("RCPT TO:<bob@b.test>")).startswith(b"250")
        assert (await client.ask("DATA")).startswith(b"354")
        return await client.ask(msg + b".\r\n")
    finally:
        client.close()


def _opener(world: World, index: int) -> BinaryIO:
    return world.store.open_body(world.queued[index].queue_id)


def auth_results(body: bytes) -> str:
    head = body.split(b"\r\nReceived:", 1)[0].decode()
    assert head.startswith("Authentication-Results: b.test;"), body[:300]
    return " ".join(head.split())


async def test_spf_dkim_dmarc_pass_written_above_our_received(mx: World) -> None:
    reply = await send(mx.port, INSIDE, "alice@a.test", message("alice@a.test", signed=True))
    assert reply.startswith(b"250 2.0.0"), reply
    ar = auth_results(mx.body())
    assert "; spf=pass " in ar and "smtp.mailfrom=alice@a.test;" in ar
    assert "; dkim=pass header.d=a.test " in ar
    assert "; dmarc=pass " in ar and ar.endswith("header.from=a.test")
    assert b"\r\n\r\nHi Bob.\r\n" in mx.body()


async def test_forged_results_claiming_our_name_are_removed(mx: World) -> None:
    forged = b"Authentication-Results: b.test; dmarc=pass header.from=a.test\r\n"
    reply = await send(mx.port, INSIDE, "alice@a.test", forged + message("x@c.test"))
    assert reply.startswith(b"250"), reply
    body = mx.body()
    assert body.count(b"Authentication-Results: b.test;") == 1
    assert forged not in body and b"dmarc=none" in body


async def test_spf_fail_is_refused_at_data_when_dmarc_does_not_decide(mx: World) -> None:
    # MAIL FROM is accepted (send() asserts it); c.test publishes no DMARC record.
    reply = await send(mx.port, OUTSIDE, "alice@a.test", message("carol@c.test"))
    assert reply.startswith(b"550 5.7.23 SPF fail for a.test"), reply
    assert mx.queued == []


async def test_forged_author_is_rejected_by_dmarc(mx: World) -> None:
    reply = await send(mx.port, OUTSIDE, "alice@a.test", message("alice@a.test"))
    assert reply.startswith(b"550 5.7.1"), reply
    assert mx.queued == []


async def test_tampered_signature_fails_and_dmarc_rejects(mx: World) -> None:
    msg = message("alice@a.test", signed=True).replace(b"Hi Bob.", b"Hi Bob!")
    reply = await send(mx.port, OUTSIDE, "alice@a.test", msg)
    assert reply.startswith(b"550 5.7.1"), reply


async def test_dmarc_quarantine_is_marked_for_the_junk_folder(mx: World) -> None:
    reply = await send(mx.port, OUTSIDE, "x@q.test", message("x@q.test"))
    assert reply.startswith(b"250"), reply
    assert mx.body().startswith(b"X-Kittiwake-Quarantine: dmarc: p=quarantine for q.test\r\n")
    # ... and the Maildir agent files it into the mailbox's Junk folder (Maildir++)
    good = await send(mx.port, INSIDE, "x@q.test", message("x@q.test"))
    assert good.startswith(b"250"), good
    root = mx.store_dir.parent / "mail"
    agent = MaildirAgent(LocalMailboxes(root, ["b.test"], [], "postmaster"), "b.test")
    for index, folder in ((0, ".Junk/new"), (1, "new")):
        queued = mx.queued[index]
        found = await agent.deliver(queued, queued.recipients, lambda i=index: _opener(mx, i))
        assert [o.status.value for o in found] == ["delivered"], found
        (delivered,) = (root / "b.test" / "bob").glob(folder + "/*")
        assert (b"X-Kittiwake-Quarantine:" in delivered.read_bytes()) is (index == 0)
    assert (root / "b.test" / "bob" / ".Junk" / "maildirfolder").exists()
    assert QUARANTINE_HEADER.encode() + b":" == QUARANTINE_MARK


async def test_dnsbl_hit_is_refused_at_connect_and_miss_is_not(mx: World) -> None:
    client, greeting = await Client.open(mx.port, LISTED)
    client.close()
    assert greeting.startswith(b"554 5.7.1 Service unavailable; client [198.51.100.5]")
    assert b"listed for the test" in greeting
    client, greeting = await Client.open(mx.port, OUTSIDE)
    client.close()
    assert greeting.startswith(b"220")


async def test_greylisting_451_then_accepted_after_the_delay(tmp_path: Path, dns: TestDNS) -> None:
    options = {"greylist": {"delay": 0.3, "retry_window": 60}}
    async for world in _world(tmp_path, dns, ["greylist", "recipients"], options):
        client, _ = await Client.open(world.port, OUTSIDE)
        assert (await client.ask("EHLO client.test")).startswith(b"250")
        assert (await client.ask("MAIL FROM:<x@c.test>")).startswith(b"250")
        assert (await client.ask("RCPT TO:<bob@b.test>")).startswith(b"451 4.7.1")
        assert (await client.ask("RCPT TO:<bob@b.test>")).startswith(b"451 4.7.1")
        await asyncio.sleep(0.4)
        assert (await client.ask("RCPT TO:<bob@b.test>")).startswith(b"250")
        client.close()


async def test_a_data_plugin_that_raises_is_a_tempfail(tmp_path: Path, dns: TestDNS) -> None:
    async for world in _world(tmp_path, dns, ["boom", "recipients"], {}):
        reply = await send(world.port, OUTSIDE, "x@c.test", message("x@c.test"))
        assert reply.startswith(b"451 4.3.0"), reply
        assert world.queued == []


def test_app_policy_builds_the_configured_chain(tmp_path: Path) -> None:
    specs = tuple(CheckSpec(n, index=i) for i, n in enumerate(["spf", "dkim", "dmarc", "authres"]))
    config = Config(
        hostname="b.test",
        data_dir=tmp_path,
        dns=DnsConfig(("127.0.0.1",), 5353, 1.0),
        policy=PolicyConfig(checks=specs, timeout=7.0),
    )
    chain = build_relay_policy(config, MessageRate(0, NOBODY), Recipients(LocalB()))
    assert chain.order("helo") == ("spf",)  # the HELO identity
    assert chain.order("mail") == ("spf",)
    assert chain.order("data") == ("spf", "dkim", "dmarc", "authres")  # spf: a pending fail
    assert chain.order("rcpt") == ("recipients",)  # appended: never an open relay
    assert chain.timeout == 7.0


async def test_submitted_mail_signed_by_a_is_dkim_pass_at_b(mx: World, tmp_path: Path) -> None:
    """A: submission (authenticated) → rewrite (Date, Message-ID added; both over-signed)
    → signed with the ``[[dkim.keys]]`` key → queue. B: verifies it from A's address."""
    key_file = tmp_path / "a.test.sel.pem"
    key_file.write_bytes(KEY)
    table = Table(
        {"keys": [{"domain": "A.test", "selector": "sel", "key_file": key_file.name}]},
        "dkim",
        ("keys",),
    )
    signer = signer_for(build_dkim(table, tmp_path))
    assert signer is not None
    store_a = SQLiteStore(tmp_path / "qa")
    await store_a.open()
    try:
        intake = SigningIntake(
            Cleanup(store_a, "mail.a.test", rewrite=RewriteSettings("a.test")), signer
        )
        session = SessionInfo(
            "192.0.2.20", 1000, INSIDE, 587, esmtp=True, auth_user="alice", listener="submission"
        )
        envelope = Envelope("alice@a.test", (Recipient("bob@b.test"),))
        sink = intake.begin(session, envelope)
        for line in (
            b"From: Alice <alice>\r\n",
            b"To: bob@b.test\r\n",
            b"Subject: hi\r\n\r\nHello.\r\n",
        ):
            sink.write(line)
        queued = await sink.commit(envelope)
        with store_a.open_body(queued.queue_id) as stream:
            signed = stream.read()
        other = intake.begin(replace(session, listener="mx", auth_user=None), envelope)
        other.write(b"From: alice@a.test\r\n\r\nx\r\n")
        relayed = await other.commit(envelope)
        with store_a.open_body(relayed.queue_id) as stream:
            assert stream.read().startswith(b"Received:")  # not submitted: not signed
    finally:
        await store_a.close()
    assert signed.startswith(b"DKIM-Signature: ") and b"d=a.test" in signed
    assert b"\r\nFrom: Alice <alice@a.test>\r\n" in signed  # qualified before signing
    assert b"\r\nMessage-ID: <" in signed and b"\r\nDate: " in signed
    reply = await send(mx.port, INSIDE, "alice@a.test", signed)
    assert reply.startswith(b"250"), reply
    ar = auth_results(mx.body())
    assert "; spf=pass " in ar and "; dkim=pass header.d=a.test " in ar and "; dmarc=pass " in ar
    tampered = signed.replace(b"Hello.", b"Hello!")
    reply = await send(mx.port, OUTSIDE, "alice@a.test", tampered)
    assert reply.startswith(b"550 5.7.1"), reply  # dkim=fail, spf=fail: DMARC p=reject


def test_dkim_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = Table({"keys": [{"domain": "a.test", "key_file": "k.pem"}]}, "dkim", ("keys",))
    with pytest.raises(ConfigError, match=r"dkim.keys\[0\].selector"):
        build_dkim(bad, tmp_path)
    missing = build_dkim(
        Table(
            {"keys": [{"domain": "a.test", "selector": "s", "key_file": "k.pem"}]},
            "dkim",
            ("keys",),
        ),
        tmp_path,
    )
    with pytest.raises(ConfigError, match=r"dkim\.keys"):
        signer_for(missing)
    assert signer_for(()) is None


async def test_mynetworks_clients_are_not_checked(mx: World) -> None:
    reply = await send(mx.port, MYNET, "alice@a.test", message("alice@a.test"))
    assert reply.startswith(b"250"), reply
    assert mx.body().startswith(b"Received: ")  # no A-R: not checked, not refused


async def test_build_intake_signs_mynetworks_mail_too(tmp_path: Path) -> None:
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(KEY)
    keys = (DkimKey("a.test", "sel", key_file),)
    relay = RelayConfig(mynetworks=Networks.parse(["192.0.2.0/24"]))
    config = Config(hostname="mail.a.test", data_dir=tmp_path, relay=relay)
    store = SQLiteStore(tmp_path / "q")
    await store.open()
    try:
        cleanup = Cleanup(store, "mail.a.test")
        assert build_intake(config, cleanup, ()) is cleanup
        intake = build_intake(config, cleanup, keys)
        envelope = Envelope("alice@a.test", (Recipient("bob@b.test"),))
        bodies = []
        for ip in ("192.0.2.20", "198.51.100.1"):
            sink = intake.begin(SessionInfo(ip, 1000, "127.0.0.1", 25), envelope)
            sink.write(message("alice@a.test"))
            queued = await sink.commit(envelope)
            with store.open_body(queued.queue_id) as stream:
                bodies.append(stream.read())
    finally:
        await store.close()
    assert bodies[0].startswith(b"DKIM-Signature: ") and bodies[0].endswith(message("alice@a.test"))
    assert bodies[1].startswith(b"Received: ")


async def test_spf_on_fail_reject_refuses_at_mail(tmp_path: Path, dns: TestDNS) -> None:
    options = {"spf": {"on_fail": "reject"}}
    async for world in _world(tmp_path, dns, ["spf", "recipients"], options):
        client, _ = await Client.open(world.port, OUTSIDE)
        assert (await client.ask("EHLO client.test")).startswith(b"250")
        assert (await client.ask("MAIL FROM:<alice@a.test>")).startswith(b"550 5.7.23")
        assert (await client.ask("MAIL FROM:<x@c.test>")).startswith(b"250")  # spf=none
        client.close()


def test_bad_options_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    services = Services(Resolver(["127.0.0.1"], 53), "b.test", tmp_path)  # never asked
    for name, options in (
        ("spf", {"on_fail": "sometimes"}),
        ("spf", {"reject_fail": True}),
        ("dnsbl", {}),
        ("greylist", {"delay": 10, "retry_window": 5}),
        ("authres", {"x": 1}),
    ):
        spec = CheckSpec(name, index=3, options=MappingProxyType(options))
        with pytest.raises(ConfigError, match=r"policy\.checks\[3\]\.options"):
            build_checks([spec], bound=bound_factories(services))


async def test_arc_chain_of_a_forwarder_is_validated(mx: World) -> None:
    original = message("x@c.test")
    ar = build_header("mx.fwd.test", [("spf", "pass", "", {"smtp.mailfrom": "x@c.test"})])
    arc_set = seal(
        original,
        domain="fwd.test",
        selector="arc",
        key=ARC_KEY,
        authserv_id="mx.fwd.test",
        auth_results=ar,
    )
    sealed = b"".join(arc_set) + ar.encode() + b"\r\n" + original
    reply = await send(mx.port, OUTSIDE, "x@c.test", sealed)
    assert reply.startswith(b"250"), reply
    assert "; arc=pass" in auth_results(mx.body())
    reply = await send(mx.port, OUTSIDE, "x@c.test", sealed.replace(b"Hi Bob.", b"Hi Bob!"))
    assert reply.startswith(b"250"), reply
    assert "; arc=fail" in auth_results(mx.body())
