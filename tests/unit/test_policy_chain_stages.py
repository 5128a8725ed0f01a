"""PolicyChain with the plugin vocabulary: order, every verdict kind, headers, quarantine,
fail-safe on raise/hang/garbage, the data stage and post-queue notifications."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kittiwake.envelope import Envelope, Recipient, Reply, SessionInfo
from kittiwake.policy import Action, PolicyChain, Verdict
from kittiwake.policy.chain import CHECK_FAILED
from kittiwake.policy.message import BodySpool, MessageContext
from kittiwake.policy.plugins import ConfiguredCheck
from kittiwake.policy.results import CheckResult, Results, current_results
from kittiwake.policy.verdict import (
    ACCEPT,
    CONTINUE,
    add_header,
    disconnect,
    found,
    quarantine,
    reject,
    tempfail,
)

SESSION = SessionInfo("192.0.2.9", 40000, "127.0.0.1", 25, helo="client.test")
RCPT = Recipient("bob@example.org")
MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody line\r\n"


class Check:
    """Answers ``verdict`` at every SMTP stage and at data; logs the calls."""

    def __init__(self, name: str, verdict: Verdict, calls: list[str]) -> None:
        self.name = name
        self.verdict = verdict
        self.calls = calls

    async def _answer(self, stage: str) -> Verdict:
        self.calls.append(f"{self.name}.{stage}")
        return self.verdict

    async def connect(self, session: SessionInfo) -> Verdict:
        return await self._answer("connect")

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        return await self._answer("mail")

    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> Verdict:
        return await self._answer("rcpt")

    async def data(self, ctx: MessageContext) -> Verdict:
        return await self._answer("data")


def context(results: Results | None = None) -> MessageContext:
    spool = BodySpool()
    spool.write(MESSAGE)
    envelope = Envelope("a@example.com", (RCPT,))
    return spool.context(SESSION, envelope, results, queue_id="Q1")


async def test_order_is_the_configured_order_and_first_decision_wins() -> None:
    calls: list[str] = []
    chain = PolicyChain(
        [
            Check("a", CONTINUE, calls),
            Check("b", reject(550, "5.7.1", "no"), calls),
            Check("c", ACCEPT, calls),
        ]
    )
    verdict = await chain.mail(SESSION, "a@example.com")
    assert verdict.action is Action.REJECT
    assert calls == ["a.mail", "b.mail"]
    assert chain.order("data") == ("a", "b", "c")


@pytest.mark.parametrize(
    "verdict",
    [
        ACCEPT,
        reject(554, "5.7.1", "denied"),
        tempfail(450, "4.7.1", "later"),
        disconnect(421, "4.7.0", "bye"),
    ],
)
async def test_deciding_verdicts_are_returned_as_given(verdict: Verdict) -> None:
    calls: list[str] = []
    chain = PolicyChain([Check("x", verdict, calls), Check("y", ACCEPT, calls)])
    assert await chain.rcpt(SESSION, "", RCPT) is verdict
    assert calls == ["x.rcpt"]


async def test_all_continue_gives_continue() -> None:
    chain = PolicyChain([Check("x", found(CheckResult("spf", "pass")), [])])
    results = Results()
    assert (await chain.connect(SESSION, results=results)).action is Action.CONTINUE
    assert results.get("spf") == CheckResult("spf", "pass")
    assert results.entries == [("x", CheckResult("spf", "pass"))]


async def test_add_header_accumulates_across_checks_and_chain_goes_on() -> None:
    calls: list[str] = []
    two = Verdict(Action.ADD_HEADER, headers=(("X-Two", "2"), ("X-Three", "3")))
    chain = PolicyChain(
        [
            Check("one", add_header("X-One", "1"), calls),
            Check("two", two, calls),
            Check("last", CONTINUE, calls),
        ]
    )
    ctx = context()
    verdict = await chain.data(ctx)
    assert verdict.action is Action.CONTINUE  # never ADD_HEADER: the session needs no new case
    assert ctx.results.headers == [("X-One", "1"), ("X-Two", "2"), ("X-Three", "3")]
    assert calls == ["one.data", "two.data", "last.data"]


async def test_quarantine_is_recorded_and_a_later_reject_still_wins() -> None:
    calls: list[str] = []
    chain = PolicyChain(
        [
            Check("dmarc", quarantine("p=quarantine"), calls),
            Check("other", quarantine("second opinion"), calls),
        ]
    )
    ctx = context()
    assert (await chain.data(ctx)).action is Action.CONTINUE
    assert ctx.results.quarantine == "dmarc: p=quarantine"  # the first one is kept
    chain2 = PolicyChain(
        [Check("dmarc", quarantine("q"), []), Check("av", reject(554, "5.7.1", "virus"), [])]
    )
    ctx2 = context()
    assert (await chain2.data(ctx2)).action is Action.REJECT
    assert ctx2.results.quarantine == "dmarc: q"


async def test_quarantine_before_data_is_kept_in_the_transaction_results() -> None:
    chain = PolicyChain([Check("x", quarantine("why"), [])])
    results = Results()
    assert (await chain.mail(SESSION, "s@x.test", results=results)).action is Action.CONTINUE
    assert results.quarantine == "x: why"
    # without a results collection it is dropped, never turned into an answer
    assert (await chain.mail(SESSION, "s@x.test")).action is Action.CONTINUE


class Raises:
    name = "raises"

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        raise RuntimeError("plugin bug")

    async def data(self, ctx: MessageContext) -> Verdict:
        raise KeyError("plugin bug")


class Hangs:
    name = "hangs"

    async def helo(self, session: SessionInfo) -> Verdict:
        await asyncio.sleep(3600)
        return ACCEPT

    async def data(self, ctx: MessageContext) -> Verdict:
        await asyncio.sleep(3600)
        return ACCEPT


class Garbage:
    name = "garbage"

    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> object:
        return "accept"  # not a Verdict

    async def data(self, ctx: MessageContext) -> Verdict:
        return Verdict(Action.ADD_HEADER, headers=(("X-Bad", "a\r\nBcc: evil@x.test"),))


async def test_raising_check_is_a_tempfail_never_a_pass(caplog: pytest.LogCaptureFixture) -> None:
    chain = PolicyChain([Raises(), Check("ok", ACCEPT, [])])
    verdict = await chain.mail(SESSION, "a@example.com")
    assert verdict is CHECK_FAILED
    assert verdict.reply == Reply(451, "4.3.0", "Temporary policy failure, try again later")
    assert (await chain.data(context())).action is Action.TEMPFAIL
    assert "policy check raises failed at mail" in caplog.text


async def test_hanging_check_is_a_tempfail_after_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    chain = PolicyChain([ConfiguredCheck("hangs", Hangs(), timeout=0.05)], timeout=30)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await chain.helo(SESSION) is CHECK_FAILED
    assert await chain.data(context()) is CHECK_FAILED
    assert loop.time() - start < 2
    assert "timed out at helo after 0.05s" in caplog.text


async def test_chain_default_timeout_applies_to_plain_checks() -> None:
    chain = PolicyChain([Hangs()], timeout=0.05)
    assert await chain.helo(SESSION) is CHECK_FAILED


async def test_non_verdict_and_malformed_header_are_tempfails() -> None:
    chain = PolicyChain([Garbage()])
    assert await chain.rcpt(SESSION, "", RCPT) is CHECK_FAILED
    ctx = context()
    assert await chain.data(ctx) is CHECK_FAILED
    assert ctx.results.headers == []
    with pytest.raises(ValueError):
        add_header("Bad Name", "x")
    with pytest.raises(ValueError):
        add_header("X-Ok", "line\nbreak")


async def test_stages_restrict_where_a_configured_check_runs() -> None:
    calls: list[str] = []
    check = Check("x", reject(550, "5.7.1", "no"), calls)
    chain = PolicyChain([ConfiguredCheck("spf", check, stages=frozenset({"mail"}))])
    assert chain.describe() == ["connect: -", "helo: -", "mail: spf", "rcpt: -"]
    assert (await chain.rcpt(SESSION, "", RCPT)).action is Action.CONTINUE
    assert (await chain.mail(SESSION, "")).action is Action.REJECT
    assert calls == ["x.mail"]


async def test_describe_lists_data_and_notification_stages_when_used() -> None:
    class Notes:
        name = "notes"

        async def queued(self, message: object) -> None: ...

    chain = PolicyChain([Check("c", CONTINUE, []), Notes()])
    assert chain.describe() == [
        "connect: c",
        "helo: -",
        "mail: c",
        "rcpt: c",
        "data: c",
        "queued: notes",
    ]


async def test_data_context_gives_headers_body_stream_and_earlier_results() -> None:
    seen: dict[str, object] = {}

    class Reader:
        name = "reader"

        async def mail(self, session: SessionInfo, sender: str) -> Verdict:
            seen["during_mail"] = current_results()
            return found(CheckResult("spf", "pass", properties=(("smtp.mailfrom", "a.test"),)))

        async def data(self, ctx: MessageContext) -> Verdict:
            seen["subject"] = ctx.headers["Subject"]
            with ctx.open_body() as body:
                seen["body"] = body.read()
            seen["spf"] = ctx.results.get("spf")
            return CONTINUE

    chain = PolicyChain([Reader()])
    tx = Results()
    await chain.mail(SESSION, "a@a.test", results=tx)
    assert seen["during_mail"] is tx
    assert current_results() is None
    await chain.data(context(tx))
    assert seen["subject"] == "hi"
    assert seen["body"] == MESSAGE
    spf = seen["spf"]
    assert isinstance(spf, CheckResult)
    assert spf.property("smtp.mailfrom") == "a.test"


def test_body_spool_spills_to_disk_and_cleans_up(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    spool = BodySpool(tmp_path, memory_limit=16)
    for _ in range(10):
        spool.write(MESSAGE)
    assert list(tmp_path.iterdir())  # on disk beyond the limit
    ctx = spool.context(SESSION, Envelope("", (RCPT,)))
    with ctx.open_body() as a, ctx.open_body() as b:
        assert a.read(5) == b"From:"
        assert b.read() == MESSAGE * 10  # independent readers
    assert ctx.headers.get_all("From") == ["a@example.com"]
    spool.close()
    spool.close()
    assert not list(tmp_path.iterdir())


def test_results_fork_and_summary() -> None:
    conn = Results()
    conn.add("dnsbl", CheckResult("dnsbl", "none"))
    tx = conn.fork()
    tx.add("spf", CheckResult("spf", "fail"))
    tx.add_header("Received-SPF", "fail")
    assert len(conn) == 1
    assert tx.summary() == "dnsbl=none spf=fail headers=1"
    assert [r.method for r in tx] == ["dnsbl", "spf"]
    assert str(CheckResult("spf", "fail", "x", (("smtp.mailfrom", "a.test"),))) == (
        "spf=fail reason='x' smtp.mailfrom=a.test"
    )


async def test_notifications_are_fire_and_forget(caplog: pytest.LogCaptureFixture) -> None:
    got: list[tuple[str, object]] = []

    class Watcher:
        name = "watcher"

        async def queued(self, message: object) -> None:
            got.append(("queued", message))

        async def delivered(self, message: object, outcome: object) -> None:
            got.append(("delivered", outcome))

        async def bounced(self, message: object, outcome: object) -> None:
            raise RuntimeError("boom")

        async def deferred(self, message: object, outcome: object) -> None:
            await asyncio.sleep(3600)

    chain = PolicyChain([ConfiguredCheck("watcher", Watcher(), timeout=0.05)])
    chain.queued("m1")
    chain.delivered("m1", "ok")
    chain.bounced("m1", "bad")
    chain.deferred("m1", "later")
    assert got == []  # nothing ran yet: the caller is never held up
    await chain.drain()
    assert got == [("queued", "m1"), ("delivered", "ok")]
    assert "policy notification watcher.bounced failed" in caplog.text
    assert "policy notification watcher.deferred failed" in caplog.text
