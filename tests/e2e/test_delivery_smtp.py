"""SmtpAgent through real sockets against scripted MX sinks on 127.0.0.2, .3, .4.

Covers: byte-exact content through dot-stuffing, pipelining, MX order and fallback
(refused, 421, dropped mid-DATA, 4xx/5xx greeting), per-recipient results, MAIL and DATA
refusals, the HELO fallback, SIZE, SMTPUTF8 → 5.6.7, DSN pass-through, BDAT, timeouts.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import pytest

from kittiwake.delivery.api import Destination, Outcome, RecipientStatus, Route
from kittiwake.delivery.smtp import SmtpAgent
from kittiwake.delivery.smtp_session import SmtpClientTimeouts
from kittiwake.delivery.tlspolicy import TlsPolicy, TlsPolicyTable
from kittiwake.envelope import BodyType, Notify, Recipient, Reply, Ret
from tests.support.sinks import DEFAULT_EXTENSIONS, FixedFinder, Script, Sink, queued, unused_port

D = RecipientStatus.DELIVERED
F = RecipientStatus.DEFERRED
B = RecipientStatus.BOUNCED
FAST = SmtpClientTimeouts(**dict.fromkeys(SmtpClientTimeouts.__dataclass_fields__, 2.0))
ROUTE = Route("smtp", "dest.test")
CONTENT = (
    b"From: a@src.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
    b"a line\r\n.\r\n\r\nend\r\n"
)


def agent(dests: list[Destination] | Reply, **kw: object) -> SmtpAgent:
    kw.setdefault("timeouts", FAST)
    kw.setdefault("connect_timeout", 2.0)
    tls = kw.pop("tls", TlsPolicyTable(TlsPolicy.NONE))
    return SmtpAgent("client.test", FixedFinder(dests), tls, **kw)  # type: ignore[arg-type]


def dest(sink: Sink, host: str = "mx.dest.test", pref: int = 10) -> Destination:
    return Destination(host, sink.host, sink.port, pref)


def statuses(outcomes: list[Outcome]) -> list[RecipientStatus]:
    return [o.status for o in outcomes]


async def run(
    a: SmtpAgent, content: bytes, rcpts: list[str | Recipient], **env: Any
) -> list[Outcome]:
    message, qrcpts, opener = queued(content, rcpts, **env)
    try:
        return await a.deliver(message, qrcpts, opener, ROUTE)
    finally:
        await a.close()


async def test_delivered_byte_exact_and_pipelined() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)])
        out = await run(a, CONTENT, ["u1@dest.test", "u2@dest.test"])
    assert statuses(out) == [D, D]
    assert all(o.relayed and o.remote_mta == "mx.dest.test" for o in out)
    assert out[0].reply.code == 250 and out[0].reply.enhanced == "2.0.0"
    (msg,) = mx.messages
    assert msg.content == CONTENT and msg.via == "DATA"
    assert msg.sender == "sender@src.test" and msg.recipients == ["u1@dest.test", "u2@dest.test"]
    assert msg.helo == "client.test" and msg.mail_params["SIZE"] == str(len(CONTENT))
    # RFC 2920: MAIL, both RCPTs and DATA arrived in one segment.
    group = [s for s in mx.segments[0] if s.startswith(b"MAIL FROM")]
    assert group and group[0].count(b"RCPT TO") == 2 and group[0].endswith(b"DATA\r\n")
    assert mx.commands[-1] == "QUIT"


async def test_no_pipelining_one_command_at_a_time() -> None:
    ext = tuple(e for e in DEFAULT_EXTENSIONS if e != "PIPELINING")
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", ["u1@dest.test", "u2@dest.test"])
    assert statuses(out) == [D, D]
    assert not any(s.count(b"\r\n") > 1 and s.startswith(b"MAIL") for s in mx.segments[0])


async def test_mx_fallback_refused_421_dropped() -> None:
    refused = Destination("mx0.dest.test", "127.0.0.2", unused_port("127.0.0.2"), 0)
    async with (
        Sink("127.0.0.2", Script(greeting="421 4.3.2 busy")) as busy,
        Sink("127.0.0.3", Script(drop="data")) as dropper,
        Sink("127.0.0.4") as good,
    ):
        a = agent([refused, dest(busy, "mx1"), dest(dropper, "mx2"), dest(good, "mx3")])
        out = await run(a, CONTENT, ["u@dest.test"])
    assert statuses(out) == [D] and out[0].remote_mta == "mx3"
    assert [m.content for m in good.messages] == [CONTENT]
    assert busy.connections == dropper.connections == 1 and not dropper.messages


async def test_all_destinations_fail_defers_with_last_error() -> None:
    port = unused_port("127.0.0.2")
    out = await run(agent([Destination("mx.dest.test", "127.0.0.2", port)]), b"x", ["u@dest.test"])
    (o,) = out
    assert o.status is F and o.reply.enhanced == "4.4.1" and "refused" in str(o.reply).lower()
    # RFC 3464 §2.3.5: no Remote-MTA when no remote MTA issued the diagnostic.
    assert o.site_failure and o.remote_mta is None


@pytest.mark.parametrize("greeting", ["450 4.3.2 come back later", "554 5.7.1 go away"])
async def test_refused_greeting_next_mx_then_deferred(greeting: str) -> None:
    async with Sink("127.0.0.2", Script(greeting=greeting)) as a1, Sink("127.0.0.3") as a2:
        assert statuses(await run(agent([dest(a1), dest(a2)]), b"x\r\n", ["u@dest.test"])) == [D]
    async with Sink("127.0.0.2", Script(greeting=greeting)) as only:
        (o,) = await run(agent([dest(only)]), b"x\r\n", ["u@dest.test"])
    assert o.status is F and 400 <= o.reply.code < 500 and o.reply.enhanced is not None
    assert o.reply.enhanced.startswith("4.") and o.site_failure


async def test_per_recipient_mixed_results() -> None:
    rcpt = {"soft@dest.test": "450 4.2.1 try later", "hard@dest.test": "550 5.1.1 no such user"}
    async with Sink("127.0.0.2", Script(rcpt=rcpt)) as mx:
        out = await run(
            agent([dest(mx)]), b"x\r\n", ["ok@dest.test", "soft@dest.test", "hard@dest.test"]
        )
    assert statuses(out) == [D, F, B]
    assert out[1].reply == Reply(450, "4.2.1", "try later") and not out[1].site_failure
    assert out[2].reply == Reply(550, "5.1.1", "no such user")
    assert mx.messages[0].recipients == ["ok@dest.test"]


async def test_soft_recipient_retried_at_next_mx() -> None:
    async with (
        Sink("127.0.0.2", Script(rcpt={"grey@dest.test": "451 4.7.1 greylisted"})) as m1,
        Sink("127.0.0.3") as m2,
    ):
        out = await run(
            agent([dest(m1), dest(m2, "mx2")]), b"x\r\n", ["a@dest.test", "grey@dest.test"]
        )
    assert statuses(out) == [D, D] and out[1].remote_mta == "mx2"
    assert m1.messages[0].recipients == ["a@dest.test"]
    assert m2.messages[0].recipients == ["grey@dest.test"]


async def test_all_recipients_refused_no_data_then_rset() -> None:
    async with Sink("127.0.0.2", Script(rcpt="550 5.1.1 nobody")) as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", ["a@dest.test", "b@dest.test"])
    assert statuses(out) == [B, B] and not mx.messages
    assert "RSET" in mx.commands


@pytest.mark.parametrize(
    ("script", "status"),
    [
        (Script(end="452 4.3.1 disk full"), F),
        (Script(end="554 5.6.0 content rejected"), B),
        (Script(data="451 4.3.0 not now"), F),
        (Script(data="554 5.7.1 not from you"), B),
    ],
)
async def test_data_refusal_applies_to_all_accepted(
    script: Script, status: RecipientStatus
) -> None:
    script.rcpt = {"hard@dest.test": "550 5.1.1 no"}
    async with Sink("127.0.0.2", script) as mx:
        out = await run(
            agent([dest(mx)]), b"x\r\n", ["a@dest.test", "b@dest.test", "hard@dest.test"]
        )
    assert statuses(out) == [status, status, B]


async def test_mail_5xx_bounces_without_next_mx() -> None:
    async with (
        Sink("127.0.0.2", Script(mail="550 5.7.1 sender rejected")) as m1,
        Sink("127.0.0.3") as m2,
    ):
        out = await run(agent([dest(m1), dest(m2)]), b"x\r\n", ["a@dest.test", "b@dest.test"])
    assert statuses(out) == [B, B] and out[0].reply.enhanced == "5.7.1"
    assert m2.connections == 0


async def test_mail_4xx_tries_next_mx() -> None:
    async with (
        Sink("127.0.0.2", Script(mail="451 4.3.0 later")) as m1,
        Sink("127.0.0.3") as m2,
    ):
        out = await run(agent([dest(m1), dest(m2)]), b"x\r\n", ["a@dest.test"])
    assert statuses(out) == [D] and len(m2.messages) == 1


async def test_helo_fallback() -> None:
    async with Sink("127.0.0.2", Script(ehlo="502 5.5.1 EHLO not implemented")) as mx:
        out = await run(
            agent([dest(mx)]), CONTENT, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME
        )
    assert statuses(out) == [D]
    assert "HELO client.test" in mx.commands
    assert mx.messages[0].mail_params == {} and mx.messages[0].content == CONTENT


async def test_size_limit_bounces_message() -> None:
    ext = (*DEFAULT_EXTENSIONS, "SIZE 100")
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(agent([dest(mx)]), b"x" * 500, ["a@dest.test", "b@dest.test"])
    assert statuses(out) == [B, B] and out[0].reply.enhanced == "5.3.4"
    assert not any(c.startswith("MAIL") for c in mx.commands)


async def test_smtputf8_to_peer_without_it_bounces_567() -> None:
    ext = tuple(e for e in DEFAULT_EXTENSIONS if e != "SMTPUTF8")
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", ["ü@dest.test"], smtputf8=True)
    assert statuses(out) == [B] and out[0].reply.enhanced == "5.6.7"
    async with Sink("127.0.0.2") as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", ["ü@dest.test"], smtputf8=True)
    assert statuses(out) == [D] and "SMTPUTF8" in mx.messages[0].mail_params


async def test_dsn_parameters_pass_through() -> None:
    rcpts: list[str | Recipient] = [
        Recipient("a@dest.test", Notify.SUCCESS | Notify.FAILURE, "rfc822;orig+a@src.test"),
        Recipient("b@dest.test", Notify.NEVER),
        Recipient("c@dest.test"),
    ]
    env = {"ret": Ret.HDRS, "envid": "env id=1"}
    async with Sink("127.0.0.2") as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", rcpts, **env)
    assert statuses(out) == [D, D, D] and all(o.peer_dsn and o.relayed for o in out)
    msg = mx.messages[0]
    assert msg.mail_params["RET"] == "HDRS" and msg.mail_params["ENVID"] == "env+20id+3D1"
    assert msg.rcpt_params == [
        {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;orig+2Ba@src.test"},
        {"NOTIFY": "NEVER"},
        {},
    ]
    ext = tuple(e for e in DEFAULT_EXTENSIONS if e != "DSN")
    async with Sink("127.0.0.2", Script(extensions=ext)) as plain:
        out = await run(agent([dest(plain)]), b"x\r\n", rcpts, **env)
    assert statuses(out) == [D, D, D] and not any(o.peer_dsn for o in out)
    assert all(o.relayed for o in out)  # the NOTIFY=SUCCESS duty stays with us
    assert "RET" not in plain.messages[0].mail_params and plain.messages[0].rcpt_params[0] == {}


@pytest.mark.parametrize("size", [10, 64 * 1024, 200_000])
async def test_bdat_to_chunking_peer(size: int) -> None:
    content = (b"line .\r\n.dot\r\n\x00\xff" * (size // 16 + 1))[:size]
    ext = (*DEFAULT_EXTENSIONS, "CHUNKING", "BINARYMIME")
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(agent([dest(mx)]), content, ["a@dest.test"], body_type=BodyType.BINARYMIME)
    assert statuses(out) == [D]
    (msg,) = mx.messages
    assert msg.via == "BDAT" and msg.content == content and msg.mail_params["BODY"] == "BINARYMIME"
    if size < 64 * 1024:  # one round trip: MAIL, RCPT and BDAT LAST in one segment
        assert any(s.startswith(b"MAIL") and b"BDAT 10 LAST" in s for s in mx.segments[0])


async def test_binarymime_without_chunking_bounces() -> None:
    async with Sink("127.0.0.2") as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", ["a@dest.test"], body_type=BodyType.BINARYMIME)
    assert statuses(out) == [B] and out[0].reply.enhanced == "5.6.3"


async def test_eightbit_header_to_peer_without_8bitmime_bounces() -> None:
    """RFC 6152 §3: 8-bit data never goes to a peer without 8BITMIME; 8-bit octets in a
    header cannot be converted to 7-bit MIME (that is SMTPUTF8's business)."""
    ext = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")
    body = "Subject: é\r\n\r\nçà\r\n".encode()
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:
        out = await run(agent([dest(mx)]), body, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME)
    assert statuses(out) == [B] and out[0].reply.enhanced == "5.6.3" and not mx.messages
    assert "header" in out[0].reply.text and out[0].remote_mta is None
    async with Sink("127.0.0.2", Script(extensions=ext)) as mx:  # declared, but all 7-bit
        out = await run(
            agent([dest(mx)]), b"x\r\n", ["a@dest.test"], body_type=BodyType.EIGHTBITMIME
        )
    assert statuses(out) == [D] and "BODY" not in mx.messages[0].mail_params
    async with Sink("127.0.0.2") as mx:
        await run(agent([dest(mx)]), body, ["a@dest.test"], body_type=BodyType.EIGHTBITMIME)
    assert mx.messages[0].mail_params["BODY"] == "8BITMIME"


@pytest.mark.parametrize("stage", ["greeting", "mail", "data-command", "end"])
async def test_timeouts_defer_then_next_mx(stage: str) -> None:
    short = SmtpClientTimeouts(**dict.fromkeys(SmtpClientTimeouts.__dataclass_fields__, 0.3))
    async with Sink("127.0.0.2", Script(stall=stage)) as slow:
        (o,) = await run(agent([dest(slow)], timeouts=short), b"x\r\n", ["a@dest.test"])
    assert o.status is F and o.reply.enhanced == "4.4.2" and "timed out" in str(o.reply)
    async with Sink("127.0.0.2", Script(stall=stage)) as slow, Sink("127.0.0.3") as fine:
        out = await run(agent([dest(slow), dest(fine)], timeouts=short), b"x\r\n", ["a@dest.test"])
    assert statuses(out) == [D]


async def test_finder_reply_ends_the_attempt() -> None:
    (o,) = await run(agent(Reply(556, "5.1.10", "null MX")), b"x", ["a@dest.test"])
    assert o.status is B and o.reply.enhanced == "5.1.10"
    (o,) = await run(agent(Reply(451, "4.4.3", "SERVFAIL")), b"x", ["a@dest.test"])
    assert o.status is F and o.site_failure


async def test_unreadable_body_defers() -> None:
    async with Sink("127.0.0.2") as mx:
        a = agent([dest(mx)])
        message, rcpts, _ = queued(b"x", ["a@dest.test"])

        def broken() -> BinaryIO:
            raise OSError(5, "Input/output error")

        out = await a.deliver(message, rcpts, broken, ROUTE)
        await a.close()
    assert statuses(out) == [F] and out[0].reply.enhanced == "4.3.0" and not mx.messages


async def test_null_sender_for_bounces() -> None:
    async with Sink("127.0.0.2") as mx:
        out = await run(agent([dest(mx)]), b"x\r\n", ["a@dest.test"], sender="")
    assert statuses(out) == [D] and mx.messages[0].sender == ""
    assert any(c.startswith("MAIL FROM:<> ") for c in mx.commands)
