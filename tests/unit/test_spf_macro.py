"""SPF macros and record syntax (RFC 7208 §4.5, §4.6, §5, §7): pure, no DNS."""

from __future__ import annotations

import ipaddress

import pytest

from kittiwake.policy.spf_macro import (
    Macro,
    MacroValues,
    SpfSyntaxError,
    expand,
    expand_domain,
    parse_domain_spec,
    parse_macro_string,
    truncate_domain,
)
from kittiwake.policy.spf_record import parse_record, select_record

V4 = MacroValues(
    ipaddress.IPv4Address("192.0.2.3"),
    "strong-bad@email.example.com",
    "email.example.com",
    helo="mx.example.org",
)
V6 = MacroValues(
    ipaddress.IPv6Address("2001:db8::cb01"), "strong-bad@email.example.com", "email.example.com"
)


async def _ptr() -> str:
    return "mx.example.org"


# RFC 7208 §7.4, the expansion table.
APPENDIX = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


@pytest.mark.parametrize(("text", "expected"), APPENDIX)
async def test_rfc7208_expansion_examples(text: str, expected: str) -> None:
    assert await expand(parse_domain_spec(text), V4) == expected


async def test_rfc7208_ipv6_example() -> None:
    got = await expand(parse_domain_spec("%{ir}.%{v}._spf.%{d2}"), V6)
    assert got == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


async def test_other_letters_escapes_and_url_encoding() -> None:
    tokens = parse_macro_string("%{h} %{p} %{c} %{r} %% %_ %-", explain=True)
    got = await expand(tokens, V4, _ptr)
    assert got == "mx.example.org mx.example.org 192.0.2.3 unknown %   %20"
    assert await expand(parse_macro_string("%{S}"), V4) == "strong-bad%40email.example.com"
    assert await expand(parse_macro_string("%{c}", explain=True), V6) == "2001:db8::cb01"
    t = await expand(parse_macro_string("%{t}", explain=True), V4)
    assert t.isdigit()
    assert await expand(parse_macro_string("%{p}"), V4) == "unknown"  # no PTR supplier


def test_macro_tokens() -> None:
    assert parse_macro_string("a%{D2r+-}b") == ("a", Macro("d", 2, True, "+-", True), "b")


@pytest.mark.parametrize(
    "text",
    ["%(ir).sbl.example.org", "%{x}.example.org", "%{d0}.example.org", "%{c}.example.org",
     "%{t}.x.org", "%{r}.x.org", "a b.example.org", "%", "%{d", "é.example.org"],
)  # fmt: skip
def test_macro_syntax_errors(text: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_domain_spec(text)


@pytest.mark.parametrize("text", ["foo", "example.123", "example.-com", "ex.com-", "."])
def test_domain_spec_must_end_in_toplabel_or_macro(text: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_domain_spec(text)


@pytest.mark.parametrize("text", ["example.com", "example.com.", "x.%{d}", "_spf.x-1.c0m"])
def test_domain_spec_ok(text: str) -> None:
    parse_domain_spec(text)


async def test_long_expansion_loses_labels_on_the_left() -> None:
    long_local = MacroValues(V4.ip, ("a" * 60 + ".") * 5 + "x@example.com", "example.com")
    name = await expand_domain(parse_domain_spec("%{l}.example.com."), long_local)
    assert len(name) <= 253
    assert name.endswith(".x.example.com")
    assert truncate_domain("a." * 200 + "com") .endswith("a.com")  # fmt: skip


# -- record selection and parsing -------------------------------------------------------


def test_select_record() -> None:
    assert select_record(["hello", "v=spf10 -all", "v=spf1 -all"]) == "v=spf1 -all"
    assert select_record(["v=spf1"]) == "v=spf1"
    assert select_record(["V=SPF1 -all"]) == "V=SPF1 -all"
    assert select_record(["hello", "v=spf10"]) is None
    with pytest.raises(SpfSyntaxError):
        select_record(["v=spf1 -all", "v=spf1 +all"])


def test_parse_record_terms() -> None:
    record = parse_record(
        "v=spf1  a  mx:example.org/24//64 ~ip4:192.0.2.1/24 ?ip6:2001:db8::/32 "
        "-ptr include:x.example exists:%{i}.e.example  foo=bar%{d} exp=e.%{d} redirect=r.example "
    )
    names = [(m.qualifier, m.name) for m in record.mechanisms]
    assert names == [("+", "a"), ("+", "mx"), ("~", "ip4"), ("?", "ip6"), ("-", "ptr"),
                     ("+", "include"), ("+", "exists")]  # fmt: skip
    mx = record.mechanisms[1]
    assert (mx.cidr4, mx.cidr6, mx.domain) == (24, 64, ("example.org",))
    assert str(record.mechanisms[2].network) == "192.0.2.0/24"
    assert record.redirect == ("r.example",)
    assert record.exp is not None
    a6 = parse_record("v=spf1 a//64 a:x.example//0").mechanisms
    assert (a6[0].domain, a6[0].cidr4, a6[0].cidr6) == (None, 32, 64)
    assert a6[1].cidr6 == 0


@pytest.mark.parametrize(
    "text",
    [
        "v=spf1 foo",
        "v=spf1 all:x",
        "v=spf1 include",
        "v=spf1 include:",
        "v=spf1 exists",
        "v=spf1 ip4:300.1.1.1",
        "v=spf1 ip4:192.0.2.1/33",
        "v=spf1 ip4:192.0.2.1/024",
        "v=spf1 ip4:2001:db8::1",
        "v=spf1 ip6:192.0.2.1",
        "v=spf1 ip6:2001:db8::/129",
        "v=spf1 a/33",
        "v=spf1 a:example.com//129",
        "v=spf1 a:",
        "v=spf1 ax",
        "v=spf1 mx:foo",
        "v=spf1 redirect=a.example redirect=b.example",
        "v=spf1 exp=a.example exp=b.example",
        "v=spf1 unknown=%{z}",
        "v=spf1 *all",
        "v=spf1 +all -ip4:1.2.3",  # an error after a matching term still counts (§4.6)
    ],
)
def test_parse_record_syntax_errors(text: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_record(text)
