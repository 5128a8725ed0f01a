"""Every SMTP command and its replies, over a real socket (RFC 5321 §4.1, §4.3.2, RFC 2034).

Reply codes and enhanced codes come from the agreed reply table (notes/replies.md).
"""

from __future__ import annotations

import pytest

from tests.support.server import KittiwakeServer
from tests.support.smtpclient import RawSMTP

EXTENSIONS = {
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "BINARYMIME",
    "DSN",
}


def test_greeting(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        assert c.greeting is not None
        # RFC 5321 §4.2: 220 <domain> <text>; no enhanced code before EHLO (RFC 2034 §3).
        assert c.greeting.code == 220
        assert c.greeting.lines == ("mx.test ESMTP Kittiwake",)


def test_ehlo_advertises_extensions_on_mx(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        reply = c.cmd("EHLO client.test").check(250, "")
        assert reply.lines[0].split()[0] == "mx.test"
        kw = reply.keywords
        assert set(kw) >= EXTENSIONS, kw
        assert kw["SIZE"] == "1048576"  # RFC 1870 §4: the fixed maximum
        assert "STARTTLS" in kw  # RFC 3207: offered before TLS
        assert "AUTH" not in kw  # no AUTH on the MX role


def test_ehlo_on_submission_before_tls_offers_starttls_not_auth(server: KittiwakeServer) -> None:
    with RawSMTP(server.submission) as c:
        kw = c.ehlo().keywords
        assert "STARTTLS" in kw
        assert "AUTH" not in kw  # RFC 4954 §4: not before TLS


def test_helo(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        reply = c.cmd("HELO client.test").check(250, "")
        assert len(reply.lines) == 1
        assert reply.lines[0].split()[0] == "mx.test"
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")


@pytest.mark.parametrize("line", ["EHLO", "HELO", "EHLO ", "HELO  "])
def test_helo_ehlo_without_domain(server: KittiwakeServer, line: str) -> None:
    with RawSMTP(server.mx) as c:
        c.cmd(line).check(501, "5.5.4")
        c.ehlo()


def test_ehlo_twice_resets_transaction(server: KittiwakeServer) -> None:
    # RFC 5321 §4.1.4: a second EHLO is a RSET too.
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.ehlo()
        c.cmd("RCPT TO:<x@example.test>").check(503, "5.5.1")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")


def test_commands_are_case_insensitive(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.cmd("ehlo client.test").check(250)
        c.cmd("mail from:<a@client.test>").check(250, "2.1.0")
        c.cmd("rcpt to:<b@example.test>").check(250, "2.1.5")
        c.cmd("rSeT").check(250, "2.0.0")
        c.cmd("noop").check(250, "2.0.0")


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        ("NOOP", 250, "2.0.0"),
        ("NOOP with a string", 250, "2.0.0"),  # RFC 5321 §4.1.1.9: the string is ignored
        ("RSET", 250, "2.0.0"),
        ("VRFY someone", 252, "2.5.0"),  # RFC 5321 §3.5.3: 252, cannot verify
        ("VRFY <someone@example.test>", 252, "2.5.0"),
        ("EXPN list", 502, "5.5.1"),
        ("HELP", 214, "2.0.0"),
        ("HELP MAIL", 214, "2.0.0"),
        ("XYZZY", 500, "5.5.2"),
        ("FOO BAR", 500, "5.5.2"),
        ("TURN", 502, "5.5.1"),
        ("ETRN example.test", 502, "5.5.1"),
        ("RSET now", 501, "5.5.4"),  # RFC 5321 §4.1.1.5: no parameters
        ("VRFY", 501, "5.5.4"),
    ],
)
def test_simple_command_replies(
    server: KittiwakeServer, line: str, code: int, enhanced: str
) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd(line).check(code, enhanced)
        c.cmd("NOOP").check(250, "2.0.0")


def test_quit(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("QUIT").check(221, "2.0.0")
        assert c.expect_closed() == b""


def test_quit_before_helo(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.cmd("QUIT").check(221, "2.0.0")
        assert c.expect_closed() == b""


@pytest.mark.parametrize("line", ["NOOP", "RSET", "HELP", "VRFY x"])
def test_session_commands_work_before_helo(server: KittiwakeServer, line: str) -> None:
    # RFC 5321 §4.1.4: NOOP, HELP, EXPN, VRFY and RSET may be used at any time.
    with RawSMTP(server.mx) as c:
        assert c.cmd(line).code in (250, 214, 252)


@pytest.mark.parametrize("line", ["GET / HTTP/1.1", "POST /x HTTP/1.0", "CONNECT a:25 HTTP/1.1"])
def test_http_verbs_close_the_connection(server: KittiwakeServer, line: str) -> None:
    with RawSMTP(server.mx) as c:
        c.send(f"{line}\r\nHost: x\r\n\r\n")
        c.read_reply().check(421, "4.7.0")  # cross-protocol request: refuse and close
        assert c.expect_closed() == b""


# --------------------------------------------------------------------- bad sequences


def test_mail_before_helo(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.cmd("MAIL FROM:<a@client.test>").check(503, "5.5.1")
        c.cmd("RCPT TO:<b@example.test>").check(503, "5.5.1")


def test_rcpt_before_mail(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("RCPT TO:<b@example.test>").check(503, "5.5.1")


def test_nested_mail(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("MAIL FROM:<a@client.test>").check(503, "5.5.1")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")  # the first MAIL still holds


def test_data_with_argument(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")
        c.cmd("DATA now").check(501, "5.5.4")  # RFC 5321 §4.1.1.4: no parameters
        c.cmd("DATA").check(354)
        c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        c.read_reply().check(250, "2.0.0")


def test_data_without_mail(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("DATA").check(503, "5.5.1")


def test_data_without_accepted_recipient(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("RCPT TO:<b@elsewhere.test>").check(554, "5.7.1")
        c.cmd("DATA").check(554, "5.5.1")  # RFC 5321 §3.3: 554 with no valid recipients
        c.cmd("NOOP").check(250, "2.0.0")


def test_bdat_without_mail(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.send(b"BDAT 4 LAST\r\nabcd")
        c.read_reply().check(503, "5.5.1")
        c.cmd("NOOP").check(250, "2.0.0")  # the 4 octets were consumed, not parsed


def test_rset_clears_the_transaction(server: KittiwakeServer) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
        c.cmd("RCPT TO:<b@example.test>").check(250, "2.1.5")
        c.cmd("RSET").check(250, "2.0.0")
        c.cmd("DATA").check(503, "5.5.1")
        c.cmd("RCPT TO:<b@example.test>").check(503, "5.5.1")


# ---------------------------------------------------- the server survives bad input

MALFORMED = [
    b"",
    b" ",
    b"\t",
    b"\x00\x01\x02",
    b"\xff\xfe\xfd",
    b"\x1b[31mred",
    b"MAIL",
    b"MAIL FROM",
    b"MAIL FROM:",
    b"MAIL FROM:<",
    b"MAIL FROM:<<>>",
    b"MAIL FROM:a@b c",
    b"MAIL TO:<a@b.test>",
    b"RCPT",
    b"RCPT TO:<>",
    b"RCPT FROM:<a@b.test>",
    b"EHLO " + b"x" * 600,
    b"NOOP " + b"x" * 600,
    b"Z" * 5000,
    b"MAIL FROM:<a@b.test> SIZE=abc",
    b"MAIL FROM:<a@b.test> =",
    b"MAIL FROM:<a@b.test> BODY=",
    b"MAIL FROM:<\xc3\xa9@b.test>",
    b"BDAT",
    b"BDAT x",
    b"BDAT -1",
    b"BDAT 1 FIRST",
    b"AUTH",
    b"AUTH PLAIN",
    b"STARTTLS now",
    b"VRFY",
    b"DATA x",
    b"QUIT now",
    b"\r",
    b"MAIL FROM:<a@b.test>\x00",
    b"MAIL FROM:<@>",
    b"MAIL FROM:<a@[999.1.1.1]>",
    b"MAIL FROM:<a@[IPv6:zz::1]>",
    b"MAIL FROM:<a..b@b.test>",
    b'MAIL FROM:<"unterminated@b.test>',
]


@pytest.mark.parametrize("line", MALFORMED, ids=lambda b: repr(b[:30]))
def test_malformed_input_is_refused_and_the_session_goes_on(
    server: KittiwakeServer, line: bytes
) -> None:
    with RawSMTP(server.mx) as c:
        c.ehlo()
        reply = c.cmd(line)
        assert 400 <= reply.code < 600, f"{line!r} got {reply}"
        assert reply.enhanced is not None and reply.enhanced[0] == str(reply.code)[0], reply
        c.cmd("NOOP").check(250, "2.0.0")
        c.cmd("MAIL FROM:<a@client.test>").check(250, "2.1.0")
