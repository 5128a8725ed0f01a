"""The SRS codec: libsrs2's format (postsrsd's own test vector), round trips, tampering,
expiry with an injected clock, SRS1 for forwarders of forwarders, key rotation."""

from __future__ import annotations

import pytest

from kittiwake.addressing.srs import Srs, SrsError, srs_tag

DAY = 86400
T0 = 1577836860  # 2020-01-01 00:01:00 UTC, the time of postsrsd's tests/unit/test_srs2.c
SECRET = "tops3cr3t"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **kw: object) -> Srs:
    return Srs([SECRET], "example.com", clock=clock or Clock(), **kw)  # type: ignore[arg-type]


def test_postsrsd_vector_both_ways() -> None:
    """Interoperable with libsrs2/postsrsd: the same secret and day give the same address."""
    srs = make()
    assert srs.forward("test@otherdomain.com") == "SRS0=vmyz=2W=otherdomain.com=test@example.com"
    assert srs.reverse("SRS0=vmyz=2W=otherdomain.com=test@example.com") == "test@otherdomain.com"


@pytest.mark.parametrize(
    "sender",
    [
        "alice@sender.example",
        "Mixed.Case@Sender.Example",
        "a=b+c@x.example",  # separators inside the local part survive
        "o'brien@[192.0.2.1]",
    ],
)
def test_round_trip(sender: str) -> None:
    srs = make()
    rewritten = srs.forward(sender)
    assert rewritten.startswith("SRS0=") and rewritten.endswith("@example.com")
    assert srs.reverse(rewritten) == sender


def test_null_sender_own_domain_and_bare_names_are_left_alone() -> None:
    srs = make()
    assert srs.forward("") == ""
    assert srs.forward("bob@example.com") == "bob@example.com"
    assert srs.forward("bob@EXAMPLE.com.") == "bob@EXAMPLE.com."
    assert srs.forward("postmaster") == "postmaster"


def test_hash_is_case_blind_but_keyed() -> None:
    srs = make()
    addr = srs.forward("alice@sender.example")
    assert srs.reverse(addr.upper().replace("@EXAMPLE.COM", "@example.com")) == (
        "ALICE@SENDER.EXAMPLE"
    )
    other = Srs(["another secret!!"], "example.com", clock=Clock())
    with pytest.raises(SrsError) as info:
        other.reverse(addr)
    assert info.value.reason == "hash"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("=sender.example=", "=evil.example="),  # another domain
        ("=alice@", "=mallory@"),  # another user
        ("SRS0=", "SRS0=x"),  # a changed hash
    ],
)
def test_tampering_is_refused(old: str, new: str) -> None:
    srs = make()
    addr = srs.forward("alice@sender.example")
    forged = addr.replace(old, new, 1)
    assert forged != addr
    with pytest.raises(SrsError) as info:
        srs.reverse(forged)
    assert info.value.reason == "hash"


def test_a_changed_time_stamp_breaks_the_hash() -> None:
    clock = Clock()
    srs = make(clock)
    addr = srs.forward("alice@sender.example")
    clock.now += DAY
    fresher = srs.timestamp()
    parts = addr.split("=")
    parts[2] = fresher
    with pytest.raises(SrsError) as info:
        srs.reverse("=".join(parts))
    assert info.value.reason == "hash"


def test_expiry_with_an_injected_clock() -> None:
    clock = Clock()
    srs = make(clock)
    addr = srs.forward("alice@sender.example")
    clock.now += 21 * DAY  # max_age_days = 21, inclusive (libsrs2)
    assert srs.reverse(addr) == "alice@sender.example"
    clock.now += DAY
    with pytest.raises(SrsError) as info:
        srs.reverse(addr)
    assert info.value.reason == "expired"
    short = make(clock, max_age_days=3)
    clock.now = T0 + 4 * DAY
    with pytest.raises(SrsError):
        short.reverse(addr)


def test_a_stamp_from_the_future_is_expired() -> None:
    clock = Clock(T0 + 5 * DAY)
    later = make(clock).forward("alice@sender.example")
    clock.now = T0  # the address claims to be from five days ahead: it wraps to ~1019 days
    with pytest.raises(SrsError) as info:
        make(clock).reverse(later)
    assert info.value.reason == "expired"


def test_stamp_wraps_every_1024_days() -> None:
    clock = Clock(T0 + 1020 * DAY)
    addr = make(clock).forward("alice@sender.example")
    clock.now += 10 * DAY  # the day number wrapped past 1024 in between
    assert make(clock).reverse(addr) == "alice@sender.example"


def test_srs1_from_an_srs0_sender_and_back() -> None:
    """We forward mail that another forwarder already rewrote: SRS1 points to that first
    forwarder; reversing it gives the first forwarder's SRS0 address back (not ours)."""
    first = Srs(["first forwarder secret"], "first.example", clock=Clock())
    hop1 = first.forward("alice@sender.example")
    srs = make()
    hop2 = srs.forward(hop1)
    assert hop2.startswith("SRS1=") and hop2.endswith("@example.com")
    assert "=first.example==" in hop2  # the SRS0 part keeps its separator
    back = srs.reverse(hop2)
    assert back == hop1
    assert first.reverse(back) == "alice@sender.example"


def test_srs1_of_srs1_keeps_the_first_forwarder() -> None:
    first = Srs(["first forwarder secret"], "first.example", clock=Clock())
    second = Srs(["second forwarder secret"], "second.example", clock=Clock())
    hop2 = second.forward(first.forward("alice@sender.example"))
    hop3 = make().forward(hop2)
    assert hop3.startswith("SRS1=") and "=first.example==" in hop3
    assert make().reverse(hop3) == first.forward("alice@sender.example")


def test_srs1_tampering_refused() -> None:
    first = Srs(["first forwarder secret"], "first.example", clock=Clock())
    hop2 = make().forward(first.forward("alice@sender.example"))
    with pytest.raises(SrsError):
        make().reverse(hop2.replace("first.example", "evil.example"))


def test_key_rotation_old_secrets_still_validate() -> None:
    old = make().forward("alice@sender.example")
    rotated = Srs(["a brand new secret", SECRET], "example.com", clock=Clock())
    assert rotated.reverse(old) == "alice@sender.example"
    assert rotated.forward("alice@sender.example") != old  # the first secret signs


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.com",  # not SRS at all
        "SRS0@example.com",
        "SRS0=abcd@example.com",
        "SRS0=abcd=2W@example.com",
        "SRS0=abcd=2W=host.example@example.com",  # no user
        "SRS0=abcd=2W==user@example.com",  # empty host
        "SRS0=abcd=!!=host.example=user@example.com",  # bad stamp characters
        "SRS0=abcd=2WX=host.example=user@example.com",  # stamp too long
        "SRS0=ab=2W=host.example=user@example.com",  # hash too short
        "SRS1=abcd=host.example@example.com",
        "SRS2=abcd=2W=host.example=user@example.com",
    ],
)
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(SrsError):
        make().reverse(address)


def test_tags_and_separators() -> None:
    assert srs_tag("SRS0=x") == srs_tag("srs0-x") == srs_tag("SRS0+x") == "SRS0"
    assert srs_tag("SRS1=x") == "SRS1"
    assert srs_tag("SRS0") is None and srs_tag("SRS0.x") is None and srs_tag("bob") is None
    addr = make().forward("alice@sender.example").replace("SRS0=", "SRS0+", 1)
    assert make().reverse(addr) == "alice@sender.example"


def test_too_long_for_a_local_part_is_not_rewritten() -> None:
    """RFC 5321 §4.5.3.1.1: the bounce address must stay a valid local part (64 octets)."""
    srs = make()
    sender = "someone.with.a.long.name@" + "sub." * 10 + "sender.example"
    assert not Srs.fits(srs.rewrite(sender))
    assert srs.forward(sender) == sender
    assert srs.reverse(srs.rewrite(sender)) == sender  # still valid if it ever came back


def test_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        Srs([], "example.com")
    with pytest.raises(ValueError):
        Srs([""], "example.com")
