"""MAIL and RCPT: address forms and ESMTP parameters (RFC 5321 §4.1.2, RFC 1870, RFC 6152,
RFC 6531, RFC 3461, RFC 4954 §5, RFC 3030), accepted and refused, over a real socket."""

from __future__ import annotations

import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP


def _ehlo(server: KittiwakeServer) -> RawSMTP:
    c = RawSMTP(server.mx)
    c.ehlo()
    return c


@pytest.mark.parametrize(
    "line",
    [
        "MAIL FROM:<>",  # null reverse-path, RFC 5321 §4.5.5
        "MAIL FROM:<a@client.test>",
        "MAIL FROM:<A.B-c+d@Client.Test>",
        "MAIL FROM:<a@client.test> SIZE=1000",
        "MAIL FROM:<a@client.test> size=1000",  # keywords are case-insensitive
        "MAIL FROM:<a@client.test> SIZE=0",
        "MAIL FROM:<a@client.test> SIZE=1048576",  # exactly the limit
        "MAIL FROM:<a@client.test> BODY=7BIT",
        "MAIL FROM:<a@client.test> BODY=8BITMIME",
        "MAIL FROM:<a@client.test> BODY=BINARYMIME",
        "MAIL FROM:<a@client.test> SMTPUTF8",
        "MAIL FROM:<a@client.test> RET=FULL",
        "MAIL FROM:<a@client.test> RET=HDRS",
        "MAIL FROM:<a@client.test> ENVID=QQ314159",
        "MAIL FROM:<a@client.test> ENVID=a+2Bb+3Dc",  # xtext, RFC 3461 §4
        "MAIL FROM:<a@client.test> AUTH=<>",  # RFC 4954 §5
        "MAIL FROM:<a@client.test> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<>",
        'MAIL FROM:<"john doe"@client.test>',  # quoted-string local part
        'MAIL FROM:<"a\\"b\\\\c"@client.test>',  # quoted-pair inside
        'MAIL FROM:<"a@b"@client.test>',
        "MAIL FROM:<a@[192.0.2.1]>",  # address literals, RFC 5321 §4.1.3
        "MAIL FROM:<a@[IPv6:2001:db8::1]>",
        "MAIL FROM:<a@[IPv6:::1]>",
        "MAIL FROM:<a@[IPv6:2001:db8::192.0.2.1]>",
        "MAIL FROM:<@relay.test:a@client.test>",  # source route, accepted and ignored
        "MAIL FROM:<@r1.test,@r2.test:a@client.test>",
        "MAIL FROM:<jörg@client.test> SMTPUTF8",  # RFC 6531 §3.3
        "MAIL FROM:<a@bücher.test> SMTPUTF8",
    ],
)
def test_mail_accepted(server: KittiwakeServer, line: str) -> None:
    with _ehlo(server) as c:
        c.cmd(line).check(250, "2.1.0")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")


@pytest.mark.parametrize(
    "params",
    [
        "",
        "NOTIFY=NEVER",
        "NOTIFY=SUCCESS",
        "NOTIFY=SUCCESS,FAILURE,DELAY",
        "notify=failure",
        "ORCPT=rfc822;b@example.test",
        "ORCPT=RFC822;b+2Bx@example.test",
        "NOTIFY=FAILURE ORCPT=rfc822;b@example.test",
    ],
)
def test_rcpt_dsn_parameters_accepted(server: KittiwakeServer, params: str) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:<b@example.test> {params}".rstrip()).check(250, "2.1.5")


@pytest.mark.parametrize(
    "rcpt",
    [
        "<postmaster>",  # RFC 5321 §4.1.1.3: no domain needed
        "<Postmaster>",
        "<POSTMASTER>",
        "<postmaster@example.test>",
        "<PostMaster@EXAMPLE.TEST>",
        '<"b"@example.test>',
        '<"with space"@example.test>',
        "<B@Example.Test>",
        "<@relay.test:b@example.test>",  # source route ignored
        "<@r1.test,@r2.test:b@example.test>",
    ],
)
def test_rcpt_forms_accepted(server: KittiwakeServer, rcpt: str) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:{rcpt}").check(250, "2.1.5")


def test_null_sender_and_several_recipients(server: KittiwakeServer) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<>").check(250, "2.1.0")
        for i in range(5):
            c.cmd(f"RCPT TO:<r{i}@example.test>").check(250, "2.1.5")


# -------------------------------------------------------------------- refusals


def test_mail_parameters_after_helo(server: KittiwakeServer) -> None:
    # RFC 5321 §4.1.1.11 / RFC 1869: parameters need EHLO; 555 "not recognized".
    with RawSMTP(server.mx) as c:
        c.cmd("HELO client.test").check(250)
        c.cmd("MAIL FROM:<a@client.test> SIZE=10").check(555, "5.5.4")
        c.cmd("MAIL FROM:<a@client.test> BODY=8BITMIME").check(555, "5.5.4")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("RCPT TO:<b@example.test> NOTIFY=NEVER").check(555, "5.5.4")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")


@pytest.mark.parametrize("param", ["FOO=bar", "FOO", "X-UNKNOWN=1", "TO=x"])
def test_unknown_mail_parameter(server: KittiwakeServer, param: str) -> None:
    with _ehlo(server) as c:
        c.cmd(f"MAIL FROM:<a@client.test> {param}").check(555, "5.5.4")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")


@pytest.mark.parametrize("param", ["FOO=bar", "SIZE=10", "RET=FULL", "BODY=8BITMIME"])
def test_unknown_rcpt_parameter(server: KittiwakeServer, param: str) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:<b@example.test> {param}").check(555, "5.5.4")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")


@pytest.mark.parametrize(
    "params",
    [
        "SIZE=1 SIZE=2",  # duplicates
        "BODY=7BIT BODY=8BITMIME",
        "RET=FULL RET=HDRS",
        "ENVID=a ENVID=b",
        "SMTPUTF8 SMTPUTF8",
        "SIZE=abc",  # bad values
        "SIZE=-1",
        "SIZE=",
        "SIZE",
        "BODY=9BIT",
        "BODY",
        "RET=ALL",
        "RET",
        "ENVID=",
        "ENVID=a+ZZ",  # bad xtext hexchar
        "ENVID=" + "x" * 101,  # RFC 3461 §4.4: at most 100 characters
        "SMTPUTF8=yes",  # takes no value
        "AUTH=",
    ],
)
def test_bad_mail_parameter_value(server: KittiwakeServer, params: str) -> None:
    with _ehlo(server) as c:
        c.cmd(f"MAIL FROM:<a@client.test> {params}").check(501, "5.5.4")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")


@pytest.mark.parametrize(
    "params",
    [
        "NOTIFY=NEVER NOTIFY=NEVER",
        "NOTIFY=",
        "NOTIFY=SOMETIMES",
        "NOTIFY=NEVER,SUCCESS",  # RFC 3461 §4.1: NEVER stands alone
        "NOTIFY=SUCCESS,SUCCESS",
        "ORCPT=b@example.test",  # missing addr-type
        "ORCPT=rfc822;",
        "ORCPT=rfc822;a+ZZb",
        "ORCPT=rfc822;b@example.test ORCPT=rfc822;c@example.test",
    ],
)
def test_bad_rcpt_parameter_value(server: KittiwakeServer, params: str) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:<b@example.test> {params}").check(501, "5.5.4")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")


def test_size_over_limit_at_mail(server: KittiwakeServer) -> None:
    # RFC 1870 §6.1: the declared size exceeds the fixed maximum → 552, permanent.
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test> SIZE=1048577").check(552, "5.3.4")
        c.cmd("MAIL FROM:<a@client.test> SIZE=99999999999999999999").check(552, "5.3.4")
        c.cmd("MAIL FROM:<a@client.test> SIZE=1048576").check(250, "2.1.0")


@pytest.mark.parametrize(
    "addr",
    [
        "<a b@client.test>",
        "<a@b@client.test>",
        "<@client.test>",
        "<a@>",
        "<a@-bad-.test>",
        "<a@client..test>",
        "<.a@client.test>",
        "<a.@client.test>",
        "<a@[300.1.1.1]>",
        "<a@[IPv6:1::2::3]>",
        "<a@[hello]>",
        '<"unterminated@client.test>',
        "a@client.test",  # no angle brackets (RFC 5321 §4.1.2: required)
        "<a@client.test",
        "<<a@client.test>>",
    ],
)
def test_bad_sender_address(server: KittiwakeServer, addr: str) -> None:
    with _ehlo(server) as c:
        c.cmd(f"MAIL FROM:{addr}").check(501, "5.1.7")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")


@pytest.mark.parametrize(
    "addr",
    ["<b c@example.test>", "<>", "<@example.test>", "<b@>", "<b@example..test>", "b@example.test"],
)
def test_bad_recipient_address(server: KittiwakeServer, addr: str) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd(f"RCPT TO:{addr}").check(501, "5.1.3")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")


def test_utf8_address_needs_smtputf8(server: KittiwakeServer) -> None:
    # RFC 6531 §3.4: without the SMTPUTF8 parameter, a non-ASCII address is 553 5.6.7.
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<jörg@client.test>").check(553, "5.6.7")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("RCPT TO:<jörg@example.test>").check(553, "5.6.7")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")


def test_utf8_recipient_with_smtputf8(server: KittiwakeServer) -> None:
    with _ehlo(server) as c:
        c.cmd("MAIL FROM:<a@client.test> SMTPUTF8").check(250, "2.1.0")
        c.cmd("RCPT TO:<jörg@example.test>").check(250, "2.1.5")
