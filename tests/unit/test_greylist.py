"""policy.greylist on the SQLite store's greylisting tables, with an injected clock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kittiwake.envelope import Recipient, SessionInfo
from kittiwake.greylisting import Decision, Rules
from kittiwake.policy.chain import PolicyChain
from kittiwake.policy.dnsbl import DNSWL_MARK, dnswl_listed
from kittiwake.policy.greylist import Greylist, network_of
from kittiwake.policy.results import Results
from kittiwake.policy.verdict import Action
from kittiwake.queue.sqldb import QueueDB
from kittiwake.queue.sqlgreylist import SQLiteGreylist

RCPT = Recipient("bob@example.test")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def state(tmp_path: Path) -> SQLiteGreylist:
    """The greylisting state of a queue database at ``tmp_path`` (created, migrated)."""
    path = tmp_path / "queue.db"
    QueueDB(path).close()
    return SQLiteGreylist(path)


@pytest.fixture
def grey(tmp_path: Path, clock: Clock) -> Iterator[Greylist]:
    with Greylist(state(tmp_path), clock=clock) as g:
        yield g


def session(ip: str = "192.0.2.10", **kw: object) -> SessionInfo:
    return SessionInfo(ip, 40000, "127.0.0.1", 25, **kw)  # type: ignore[arg-type]


async def attempt(
    g: Greylist, ip: str = "192.0.2.10", sender: str = "alice@a.test", rcpt: Recipient = RCPT
) -> Action:
    return (await g.rcpt(session(ip), sender, rcpt)).action


def test_network_of() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert network_of("unix:/tmp/x") is None


async def test_first_attempt_is_greylisted(grey: Greylist) -> None:
    verdict = await grey.rcpt(session(), "alice@a.test", RCPT)
    assert verdict.action is Action.TEMPFAIL
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.1")
    assert verdict.reply.text == "Greylisted, please try again later"


async def test_too_early_then_after_the_delay(grey: Greylist, clock: Clock) -> None:
    assert await attempt(grey) is Action.TEMPFAIL
    clock.now += 299
    assert await attempt(grey) is Action.TEMPFAIL  # too early; first-seen time kept
    clock.now += 2  # 301 s after the first attempt
    assert await attempt(grey) is Action.CONTINUE
    clock.now += 10 * 86400  # a known triplet passes without delay
    assert await attempt(grey) is Action.CONTINUE


@pytest.mark.parametrize("cleanup_interval", [60.0, 1e9])  # swept, or expired in place
async def test_retry_after_the_window_starts_over(
    tmp_path: Path, clock: Clock, cleanup_interval: float
) -> None:
    with Greylist(state(tmp_path), clock=clock, cleanup_interval=cleanup_interval) as g:
        assert await attempt(g) is Action.TEMPFAIL
        clock.now += 4 * 3600 + 1
        assert await attempt(g) is Action.TEMPFAIL  # expired: new first-seen
        clock.now += 301
        assert await attempt(g) is Action.CONTINUE


async def test_known_triplet_forgotten_after_whitelist_ttl(grey: Greylist, clock: Clock) -> None:
    await attempt(grey)
    clock.now += 400
    assert await attempt(grey) is Action.CONTINUE
    clock.now += 36 * 86400
    assert await attempt(grey) is Action.TEMPFAIL


async def test_triplet_parts_and_case(grey: Greylist, clock: Clock) -> None:
    await attempt(grey, sender="Alice@A.test")
    clock.now += 400
    assert await attempt(grey, sender="alice@a.TEST") is Action.CONTINUE  # lower-cased
    assert await attempt(grey, sender="") is Action.TEMPFAIL  # null sender: its own triplet
    assert await attempt(grey, rcpt=Recipient("carol@example.test")) is Action.TEMPFAIL
    assert await attempt(grey, ip="198.51.100.10") is Action.TEMPFAIL
    clock.now += 400
    assert await attempt(grey, sender="") is Action.CONTINUE


async def test_same_slash24_shares_a_triplet(grey: Greylist, clock: Clock) -> None:
    assert await attempt(grey, ip="192.0.2.10") is Action.TEMPFAIL
    clock.now += 400
    assert await attempt(grey, ip="192.0.2.200") is Action.CONTINUE  # another pool host


async def test_same_slash64_shares_a_triplet(grey: Greylist, clock: Clock) -> None:
    assert await attempt(grey, ip="2001:db8:0:1::a") is Action.TEMPFAIL
    clock.now += 400
    assert await attempt(grey, ip="2001:db8:0:1:ffff::b") is Action.CONTINUE
    assert await attempt(grey, ip="2001:db8:0:2::a") is Action.TEMPFAIL


async def test_auto_whitelist_after_n_successful_retries(grey: Greylist, clock: Clock) -> None:
    for n in range(5):
        rcpt = Recipient(f"user{n}@example.test")
        assert await attempt(grey, rcpt=rcpt) is Action.TEMPFAIL
        clock.now += 400
        assert await attempt(grey, rcpt=rcpt) is Action.CONTINUE
    # the network is whitelisted: a brand-new triplet passes at once, from any /24 host
    assert await attempt(grey, ip="192.0.2.99", rcpt=Recipient("new@example.test")) is (
        Action.CONTINUE
    )
    assert grey.decide("192.0.2.0/24", "x@y.test", "z@example.test") is Decision.WHITELISTED
    assert await attempt(grey, ip="198.51.100.1") is Action.TEMPFAIL  # other networks not
    clock.now += 36 * 86400  # silent for longer than whitelist_ttl
    assert await attempt(grey, rcpt=Recipient("newer@example.test")) is Action.TEMPFAIL


async def test_four_retries_do_not_whitelist(grey: Greylist, clock: Clock) -> None:
    for n in range(4):
        rcpt = Recipient(f"user{n}@example.test")
        await attempt(grey, rcpt=rcpt)
        clock.now += 400
        await attempt(grey, rcpt=rcpt)
    assert await attempt(grey, rcpt=Recipient("new@example.test")) is Action.TEMPFAIL


async def test_authenticated_and_exempt_sessions_skip(tmp_path: Path, clock: Clock) -> None:
    exempt_ips = {"192.0.2.50"}
    with Greylist(state(tmp_path), clock=clock, exempt=lambda s: s.client_ip in exempt_ips) as g:
        authed = session("203.0.113.5", auth_user="alice")
        assert (await g.rcpt(authed, "alice@a.test", RCPT)).action is Action.CONTINUE
        assert (await g.rcpt(session("192.0.2.50"), "x@a.test", RCPT)).action is Action.CONTINUE
        assert await attempt(g, ip="192.0.2.51") is Action.TEMPFAIL
        assert (await g.rcpt(session("unix:"), "x@a.test", RCPT)).action is Action.CONTINUE


async def test_state_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    with Greylist(state(tmp_path), clock=clock) as g:
        assert await attempt(g) is Action.TEMPFAIL
    clock.now += 400
    with Greylist(state(tmp_path), clock=clock) as g:
        assert await attempt(g) is Action.CONTINUE
    conn = sqlite3.connect(tmp_path / "queue.db")  # the queue's own database holds it
    assert conn.execute("SELECT passed FROM greylist_triplets").fetchall() == [(1,)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_cleanup_removes_expired_rows(grey: Greylist, clock: Clock) -> None:
    await attempt(grey, rcpt=Recipient("a@example.test"))  # never retried
    await attempt(grey, rcpt=Recipient("b@example.test"))
    clock.now += 400
    await attempt(grey, rcpt=Recipient("b@example.test"))  # passed, client counted
    assert await grey.cleanup() == 0
    clock.now += 5 * 3600  # a's window is over
    assert await grey.cleanup() == 1
    clock.now += 36 * 86400  # b and the client row are stale
    assert await grey.cleanup() == 2


async def test_broken_database_fails_open(grey: Greylist, tmp_path: Path) -> None:
    grey.close()
    assert await attempt(grey) is Action.CONTINUE


async def test_through_the_policy_chain(grey: Greylist, clock: Clock) -> None:
    chain = PolicyChain([grey])
    assert "rcpt: greylist" in chain.describe()
    results = Results()
    assert (await chain.rcpt(session(), "a@a.test", RCPT, results=results)).action is (
        Action.TEMPFAIL
    )
    clock.now += 400
    assert (await chain.rcpt(session(), "a@a.test", RCPT, results=results)).action is (
        Action.CONTINUE
    )
    assert [str(r) for r in results] == [
        "greylist=temperror reason='new'",
        "greylist=pass reason='retried'",
    ]


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Rules(delay=600, retry_window=300)


async def test_dnswl_listed_clients_can_be_exempt(tmp_path: Path, clock: Clock) -> None:
    with Greylist(state(tmp_path), clock=clock, exempt=dnswl_listed) as g:
        s = session()
        s.extra[DNSWL_MARK] = "wl.test"  # what Dnsbl.connect sets for an allow listing
        assert (await g.rcpt(s, "a@a.test", RCPT)).action is Action.CONTINUE
        assert await attempt(g) is Action.TEMPFAIL
