"""queue.routing: the transport table syntax and the Router's order (Postfix transport(5))."""

from __future__ import annotations

import pytest

from kittiwake.delivery.api import Route
from kittiwake.envelope import Reply
from kittiwake.queue.routing import Router, error_reply, parse_transport

# -- parse_transport ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local", Route("local")),
        ("LOCAL", Route("local")),
        ("discard", Route("discard")),
        ("smtp:", Route("smtp")),
        ("smtp", Route("smtp")),
        ("smtp:example.com", Route("smtp", "example.com")),
        ("smtp:Example.COM.", Route("smtp", "example.com")),
        ("smtp:example.com:2525", Route("smtp", "example.com:2525")),
        ("smtp:[mail.example.com]", Route("smtp", "[mail.example.com]")),
        ("smtp:[127.0.0.2]:2525", Route("smtp", "[127.0.0.2]:2525")),
        ("smtp:[IPv6:2001:db8::1]:25", Route("smtp", "[2001:db8::1]:25")),
        ("smtp:[::1]", Route("smtp", "[::1]")),
        ("smtp:bücher.example", Route("smtp", "xn--bcher-kva.example")),
        ("lmtp:127.0.0.1:24", Route("lmtp", "127.0.0.1:24")),
        ("lmtp:mail.example.com", Route("lmtp", "mail.example.com:24")),
        ("lmtp:inet:localhost:2424", Route("lmtp", "localhost:2424")),
        ("lmtp:[::1]:24", Route("lmtp", "[::1]:24")),
        ("lmtp:unix:/run/dovecot/lmtp", Route("lmtp", "unix:/run/dovecot/lmtp")),
        ("error:5.1.1 no such user", Route("error", "5.1.1 no such user")),
        ("error:4.3.0 try later", Route("error", "4.3.0 try later")),
        (
            "error:5.7.1",
            Route(
                "error", "5.7.1 " + "delivery to this destination is refused by the transport table"
            ),
        ),
        ("error:mailbox gone", Route("error", "5.0.0 mailbox gone")),
        (
            "error",
            Route("error", "5.0.0 delivery to this destination is refused by the transport table"),
        ),
        ("  smtp:[127.0.0.2]:25  ", Route("smtp", "[127.0.0.2]:25")),
    ],
)
def test_parse_transport(text: str, expected: Route) -> None:
    assert parse_transport(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown transport"),
        ("uucp:host", "unknown transport"),
        ("local:foo", "no next hop"),
        ("discard:why", "no next hop"),
        ("smtp:[127.0.0.1", "bad smtp next hop"),
        ("smtp:example.com:0", "bad smtp next hop"),
        ("smtp:example.com:70000", "bad smtp next hop"),
        ("smtp:bad..domain", "bad smtp next hop"),
        ("smtp:[IPv6:1.2.3.4]", "bad smtp next hop"),
        ("lmtp:", "needs a next hop"),
        ("lmtp:unix:relative/path", "absolute"),
        ("lmtp:::1:24", "brackets"),
        ("lmtp:host:port", "bad port"),
        ("error:2.0.0 fine", "enhanced status code"),
        ("error:5.1 short", "enhanced status code"),
        ("error:550 text", "enhanced status code"),
    ],
)
def test_parse_transport_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_transport(text)


def test_error_reply() -> None:
    assert error_reply("5.1.1 no such user") == Reply(550, "5.1.1", "no such user")
    assert error_reply("4.3.0 later") == Reply(450, "4.3.0", "later")
    assert error_reply(parse_transport("error").nexthop).code == 550


# -- Router ----------------------------------------------------------------------------

TABLE: dict[str, str | Route] = {
    "example.net": "smtp:[127.0.0.2]:2525",
    ".example.net": "smtp:[127.0.0.3]:2525",
    ".deep.example.net": "lmtp:127.0.0.1:24",
    "lists.example": "lmtp:unix:/run/lmtp",
    "local.example": "error:5.1.1 nobody here",
    "drop.example": "discard",
    "mx.example": "smtp:",
    "bücher.example": "smtp:[127.0.0.4]",
    "routed.example": Route("smtp", "[127.0.0.5]:25"),
}


@pytest.fixture
def router() -> Router:
    return Router(TABLE, ["local.example", "mail.example", "Other.Example.", "[127.0.0.1]"])


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # transport table, exact domain
        ("a@example.net", Route("smtp", "[127.0.0.2]:2525")),
        ("a@EXAMPLE.NET", Route("smtp", "[127.0.0.2]:2525")),
        ("a@example.net.", Route("smtp", "[127.0.0.2]:2525")),
        # .parent entries: subdomains only, nearest parent first
        ("a@sub.example.net", Route("smtp", "[127.0.0.3]:2525")),
        ("a@x.y.example.net", Route("smtp", "[127.0.0.3]:2525")),
        ("a@deep.example.net", Route("smtp", "[127.0.0.3]:2525")),
        ("a@x.deep.example.net", Route("lmtp", "127.0.0.1:24")),
        # the table wins over local domains
        ("a@local.example", Route("error", "5.1.1 nobody here")),
        ("a@lists.example", Route("lmtp", "unix:/run/lmtp")),
        ("a@drop.example", Route("discard")),
        # "smtp:" without next hop: the recipient's own domain, by MX
        ("a@mx.example", Route("smtp", "mx.example")),
        ("a@bücher.example", Route("smtp", "[127.0.0.4]")),
        ("a@xn--bcher-kva.example", Route("smtp", "[127.0.0.4]")),
        ("a@routed.example", Route("smtp", "[127.0.0.5]:25")),
        # local domains
        ("a@mail.example", Route("local")),
        ("a@other.example", Route("local")),
        ("a@[127.0.0.1]", Route("local")),
        ("postmaster", Route("local")),
        ('"odd@local"@mail.example', Route("local")),
        # everything else: MX lookup of the domain
        ("a@elsewhere.example", Route("smtp", "elsewhere.example")),
        ("a@Elsewhere.Example", Route("smtp", "elsewhere.example")),
        ("a@sub.mail.example", Route("smtp", "sub.mail.example")),
        ("a@[127.0.0.9]", Route("smtp", "[127.0.0.9]")),
        ("a@[IPv6:::2]", Route("smtp", "[::2]")),
    ],
)
def test_route(router: Router, address: str, expected: Route) -> None:
    assert router.route(address) == expected
    assert router(address) == expected


def test_smarthost_after_table_and_local_domains() -> None:
    r = Router(TABLE, ["mail.example"], smarthost="[relay.example]:587")
    assert r.route("a@elsewhere.example") == Route("smtp", "[relay.example]:587")
    assert r.route("a@mail.example") == Route("local")
    assert r.route("a@example.net") == Route("smtp", "[127.0.0.2]:2525")


@pytest.mark.parametrize(
    ("smarthost", "nexthop"),
    [
        ("relay.example", "relay.example"),
        ("relay.example:2525", "relay.example:2525"),
        ("[127.0.0.2]", "[127.0.0.2]"),
        ("smtp:[127.0.0.2]:25", "[127.0.0.2]:25"),
    ],
)
def test_smarthost_forms(smarthost: str, nexthop: str) -> None:
    assert Router({}, [], smarthost=smarthost).route("a@b.example") == Route("smtp", nexthop)


@pytest.mark.parametrize("smarthost", ["[relay", "relay:0", "smtp:"])
def test_bad_smarthost(smarthost: str) -> None:
    with pytest.raises(ValueError):
        Router({}, [], smarthost=smarthost)


def test_no_smarthost_when_empty() -> None:
    assert Router({}, [], smarthost="").route("a@b.example") == Route("smtp", "b.example")


@pytest.mark.parametrize(
    "table",
    [
        {"example.com": "bogus:x"},
        {"bad..domain": "local"},
        {"a@example.com": "local"},
        {"*": "local"},
    ],
)
def test_bad_table_entries_name_the_key(table: dict[str, str]) -> None:
    key = next(iter(table))
    with pytest.raises(ValueError, match="transport table entry"):
        Router(table, [])
    with pytest.raises(ValueError, match=repr(key).replace("*", r"\*")):
        Router(table, [])


def test_relay_domains(router: Router) -> None:
    assert router.relay_domains() == frozenset(
        {
            "example.net",
            ".example.net",
            ".deep.example.net",
            "lists.example",
            "local.example",
            "drop.example",
            "mx.example",
            "xn--bcher-kva.example",
            "routed.example",
        }
    )
    assert router.is_relay_domain("EXAMPLE.net")
    assert router.is_relay_domain("a.b.example.net")
    assert router.is_relay_domain("bücher.example")
    assert not router.is_relay_domain("net")
    assert not router.is_relay_domain("mail.example")
    assert not router.is_relay_domain("elsewhere.example")
