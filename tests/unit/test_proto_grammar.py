"""RFC 5321 §4.1.2 grammar, RFC 3461 xtext and the MAIL/RCPT parameter semantics."""

from __future__ import annotations

import time

import pytest

from kittiwake.envelope import BodyType, Notify, Recipient, Ret
from kittiwake.proto import grammar, replies
from kittiwake.proto.events import MailFrom, RcptTo
from kittiwake.proto.params import parse_mail, parse_rcpt


@pytest.mark.parametrize(
    ("path", "mailbox"),
    [
        ("<user@example.com>", "user@example.com"),
        ("<first.last+tag@sub.example.co>", "first.last+tag@sub.example.co"),
        ("<!#$%&'*+-/=?^_`{|}~@x.y>", "!#$%&'*+-/=?^_`{|}~@x.y"),
        ('<"quoted local"@example.com>', '"quoted local"@example.com'),
        ('<"a>b\\"c"@example.com>', '"a>b\\"c"@example.com'),
        ('<"">@x>', None),
        ("<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        ("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
        ("<a@[ipv6:::ffff:192.0.2.1]>", "a@[ipv6:::ffff:192.0.2.1]"),
        ("<a@[x-tag:anything]>", "a@[x-tag:anything]"),
        ("<@relay.one,@relay.two:user@final.test>", "user@final.test"),
        ("<a@xn--bcher-kva.example>", "a@xn--bcher-kva.example"),
        ("<a@b--c.d>", "a@b--c.d"),
        ("<a@123.example>", "a@123.example"),
        ("<用户@例子.广告>", "用户@例子.广告"),
        # invalid
        ("<>", None),
        ("<user>", None),
        ("user@example.com", None),
        ("<user@example.com", None),
        ("<us er@example.com>", None),
        ("<.user@example.com>", None),
        ("<user.@example.com>", None),
        ("<us..er@example.com>", None),
        ("<user@-example.com>", None),
        ("<user@example-.com>", None),
        ("<user@example..com>", None),
        ("<user@example.com.>", None),
        ("<user@ex_ample.com>", None),
        ("<user@[300.1.1.1]>", None),
        ("<user@[1.2.3]>", None),
        ("<user@[IPv6:2001:db8::1%eth0]>", None),
        ("<user@[IPv6:12345::]>", None),
        ("<user@[a[b]>", None),
        ("<@relay:user>", None),
        ("<@relay user@x>", None),
        ("<user@example.com\n>", None),
        ("<user\x00@example.com>", None),
    ],
)
def test_parse_path(path: str, mailbox: str | None) -> None:
    result = grammar.parse_path(path)
    if mailbox is None:
        assert isinstance(result, grammar.PathError)
    else:
        assert result == (mailbox, len(path))


def test_path_length_limits_rfc5321_4_5_3_1() -> None:
    assert grammar.parse_path(f"<{'a' * 64}@x.test>") == (f"{'a' * 64}@x.test", 73)
    assert grammar.parse_path(f"<{'a' * 65}@x.test>") == grammar.PathError("too_long")
    label = "b" * 63
    domain = ".".join([label] * 4)  # 255 octets
    assert len(domain) == 255
    assert grammar.parse_path(f"<a@{domain}>") != grammar.PathError("syntax")
    assert grammar.parse_path(f"<a@{domain}x>") == grammar.PathError("too_long")
    # 64 + 1 + 189 + 2 = 256 octets with brackets is fine; one more is not.
    assert not isinstance(grammar.parse_path(f"<{'a' * 64}@{'c' * 189}>"), grammar.PathError)
    assert grammar.parse_path(f"<{'a' * 64}@{'c' * 190}>") == grammar.PathError("too_long")
    # Octets, not characters: 22 three-octet characters exceed 64.
    assert grammar.parse_path(f"<{'é' * 33}@x.test>") == grammar.PathError("too_long")


def test_regexes_do_not_backtrack_catastrophically() -> None:
    hostile = [
        "<" + "a-" * 500 + "!@x>",
        "<a@" + "a-" * 500 + ">",
        "<a@" + "a." * 500 + ">",
        '<"' + "\\\\" * 500 + ">",
        "<" + "a." * 500 + "@>",
    ]
    start = time.process_time()
    for text in hostile:
        assert isinstance(grammar.parse_path(text), grammar.PathError)
    assert time.process_time() - start < 0.5


@pytest.mark.parametrize(
    ("xtext", "decoded"),
    [
        ("plain", "plain"),
        ("a+2Bb", "a+b"),
        ("+3D+2B", "=+"),
        ("", ""),
        ("a+2b", None),  # hex must be upper case (RFC 3461 §4)
        ("a+2", None),
        ("a=b", None),
        ("a b", None),
        ("é", None),
    ],
)
def test_xtext_decode(xtext: str, decoded: str | None) -> None:
    assert grammar.xtext_decode(xtext) == decoded


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" SIZE=10 BODY=8BITMIME", [("SIZE", "10"), ("BODY", "8BITMIME")]),
        (" smtputf8", [("SMTPUTF8", None)]),
        ("  x-foo=bar  ", [("X-FOO", "bar")]),
        (" =x", None),
        (" -x=1", None),
        (" a=", None),
        (" a=b=c", None),
        (" a=\x01", None),
    ],
)
def test_split_params(text: str, expected: object) -> None:
    assert grammar.split_params(text) == expected


@pytest.mark.parametrize(
    ("arg", "ok"),
    [
        ("client.example.com", True),
        ("localhost", True),
        ("my_host.local", True),
        ("example.com.", True),
        ("192.0.2.1", True),
        ("[192.0.2.1]", True),
        ("[IPv6:::1]", True),
        ("[999.0.0.1]", False),
        ("[192.0.2.1", False),
        ("-bad.example", False),
        ("bad..example", False),
        ("h\u00e9llo.example", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_helo_ok(arg: str, ok: bool) -> None:
    assert grammar.helo_ok(arg) is ok


# ------------------------------------------------------------------------------ MAIL FROM


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("FROM:<a@b.test>", MailFrom("a@b.test")),
        ("from:<a@b.test>", MailFrom("a@b.test")),
        ("FROM: <a@b.test>", MailFrom("a@b.test")),
        ("FROM:<>", MailFrom("")),
        ("FROM:<@x.test:a@b.test>", MailFrom("a@b.test")),
        (
            "FROM:<a@b.test> SIZE=1000 BODY=8bitmime RET=hdrs ENVID=ab+2Bc AUTH=<>",
            MailFrom("a@b.test", 1000, BodyType.EIGHTBITMIME, False, Ret.HDRS, "ab+c", "<>"),
        ),
        ("FROM:<a@b.test> BODY=BINARYMIME", MailFrom("a@b.test", body_type=BodyType.BINARYMIME)),
        ("FROM:<a@b.test> AUTH=u+40x.test", MailFrom("a@b.test", auth="u@x.test")),
        ("FROM:<用户@例子.广告> SMTPUTF8", MailFrom("用户@例子.广告", smtputf8=True)),
        ("FROM:<a@b.test> SIZE=0", MailFrom("a@b.test", size=0)),
        # errors
        ("TO:<a@b.test>", replies.MAIL_SYNTAX),
        ("FROM", replies.MAIL_SYNTAX),
        ("FROM:a@b.test", replies.BAD_SENDER),
        ("FROM:<a@b.test", replies.BAD_SENDER),
        ("FROM:<a b@c.test>", replies.BAD_SENDER),
        ("FROM:<a@[1.2.3.999]>", replies.BAD_SENDER),
        (f"FROM:<{'a' * 65}@b.test>", replies.SENDER_TOO_LONG),
        ("FROM:<a@b.test>x", replies.PARAM_SYNTAX),
        ("FROM:<a@b.test> =x", replies.PARAM_SYNTAX),
        ("FROM:<a@b.test> FOO=bar", replies.PARAM_UNKNOWN),
        ("FROM:<a@b.test> SIZE=1 SIZE=2", replies.PARAM_DUPLICATE),
        ("FROM:<a@b.test> SIZE", replies.PARAM_BAD),
        ("FROM:<a@b.test> SIZE=12a", replies.PARAM_BAD),
        ("FROM:<a@b.test> SIZE=" + "9" * 21, replies.PARAM_BAD),
        ("FROM:<a@b.test> SIZE=2000", replies.TOO_BIG),
        ("FROM:<a@b.test> BODY=9BIT", replies.PARAM_BAD),
        ("FROM:<a@b.test> BODY", replies.PARAM_BAD),
        ("FROM:<a@b.test> SMTPUTF8=yes", replies.PARAM_BAD),
        ("FROM:<a@b.test> RET=ALL", replies.PARAM_BAD),
        ("FROM:<a@b.test> ENVID=" + "x" * 101, replies.PARAM_BAD),
        ("FROM:<a@b.test> ENVID=a+0A", replies.PARAM_BAD),
        ("FROM:<a@b.test> ENVID=a+zz", replies.PARAM_BAD),
        ("FROM:<a@b.test> AUTH", replies.PARAM_BAD),
        ("FROM:<用户@例子.广告>", replies.NEED_SMTPUTF8),
    ],
)
def test_parse_mail(arg: str, expected: object) -> None:
    assert parse_mail(arg, esmtp=True, max_size=1500) == expected


def test_mail_parameters_need_ehlo() -> None:
    assert parse_mail("FROM:<a@b.test> SIZE=1", esmtp=False, max_size=0) == (
        replies.PARAM_NEED_EHLO
    )
    assert parse_mail("FROM:<a@b.test>", esmtp=False, max_size=0) == MailFrom("a@b.test")
    assert parse_mail("FROM:<a@b.test> SIZE=99999999", esmtp=True, max_size=0) == MailFrom(
        "a@b.test", size=99999999
    )


# -------------------------------------------------------------------------------- RCPT TO


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("TO:<c@d.test>", Recipient("c@d.test")),
        ("to: <c@d.test>", Recipient("c@d.test")),
        ("TO:<Postmaster>", Recipient("postmaster")),
        ("TO:<postmaster@d.test>", Recipient("postmaster@d.test")),
        ("TO:<c@d.test> NOTIFY=NEVER", Recipient("c@d.test", Notify.NEVER)),
        (
            "TO:<c@d.test> NOTIFY=success,Failure,DELAY",
            Recipient("c@d.test", Notify.SUCCESS | Notify.FAILURE | Notify.DELAY),
        ),
        ("TO:<c@d.test> NOTIFY=DELAY", Recipient("c@d.test", Notify.DELAY)),
        (
            "TO:<c@d.test> ORCPT=rfc822;c+2Bx@d.test",
            Recipient("c@d.test", orcpt="rfc822;c+x@d.test"),
        ),
        (
            "TO:<c@d.test> NOTIFY=FAILURE ORCPT=rfc822;c@d.test",
            Recipient("c@d.test", Notify.FAILURE, "rfc822;c@d.test"),
        ),
        # errors
        ("FROM:<c@d.test>", replies.RCPT_SYNTAX),
        ("TO:<>", replies.BAD_RECIPIENT),
        ("TO:c@d.test", replies.BAD_RECIPIENT),
        ("TO:<c@d.test> NOTIFY=NEVER,SUCCESS", replies.PARAM_BAD),
        ("TO:<c@d.test> NOTIFY=SUCCESS,SUCCESS", replies.PARAM_BAD),
        ("TO:<c@d.test> NOTIFY=SOMETIMES", replies.PARAM_BAD),
        ("TO:<c@d.test> NOTIFY", replies.PARAM_BAD),
        ("TO:<c@d.test> NOTIFY=", replies.PARAM_SYNTAX),
        ("TO:<c@d.test> ORCPT=c@d.test", replies.PARAM_BAD),
        ("TO:<c@d.test> ORCPT=rfc 822;c@d.test", replies.PARAM_SYNTAX),
        ("TO:<c@d.test> ORCPT=rfc822;", replies.PARAM_BAD),
        ("TO:<c@d.test> ORCPT=(x);c@d.test", replies.PARAM_BAD),
        ("TO:<c@d.test> ORCPT=rfc822;" + "x" * 500, replies.PARAM_BAD),
        ("TO:<c@d.test> NOTIFY=NEVER NOTIFY=NEVER", replies.PARAM_DUPLICATE),
        ("TO:<c@d.test> SIZE=1", replies.PARAM_UNKNOWN),
        ("TO:<ü@d.test>", replies.NEED_SMTPUTF8),
    ],
)
def test_parse_rcpt(arg: str, expected: object) -> None:
    result = parse_rcpt(arg, esmtp=True, smtputf8=False)
    if isinstance(expected, Recipient):
        assert result == RcptTo(expected)
    else:
        assert result == expected


def test_rcpt_utf8_allowed_in_smtputf8_transaction() -> None:
    assert parse_rcpt("TO:<ü@d.test>", esmtp=True, smtputf8=True) == RcptTo(Recipient("ü@d.test"))
