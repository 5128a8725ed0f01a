# ruff: noqa: E501 - one table row per line reads best; rows carry long byte strings
"""Byte-in / reply-codes-out table for every command and every core error reply.

Each row starts a fresh connection, feeds ``script`` in one ``receive_data`` (so it also
exercises pipelining), accepts every decision, and compares the exact reply codes with
their enhanced codes.
"""

from __future__ import annotations

import pytest

from tests.unit.test_proto_support import Driver, config, reply_codes

EHLO = b"EHLO client.test\r\n"
MAIL = b"MAIL FROM:<a@b.test>\r\n"
RCPT = b"RCPT TO:<c@d.test>\r\n"
TX = EHLO + MAIL + RCPT

# fmt: off
ROWS: list[tuple[str, dict[str, object], bytes, list[str]]] = [
    # greeting commands
    ("helo", {}, b"HELO client.test\r\n", ["250"]),
    ("ehlo", {}, EHLO, ["250"]),
    ("ehlo-lowercase", {}, b"ehlo client.test\r\n", ["250"]),
    ("ehlo-address-literal", {}, b"EHLO [192.0.2.1]\r\n", ["250"]),
    ("ehlo-underscore", {}, b"EHLO my_pc.lan\r\n", ["250"]),
    ("ehlo-comment", {}, b"EHLO client.test (comment)\r\n", ["250"]),
    ("helo-missing", {}, b"HELO\r\n", ["501 5.5.4"]),
    ("ehlo-missing-spaces", {}, b"EHLO   \r\n", ["501 5.5.4"]),
    ("ehlo-invalid", {}, b"EHLO -bad-\r\n", ["501 5.5.2"]),
    ("ehlo-bad-literal", {}, b"EHLO [1.2.3.256]\r\n", ["501 5.5.2"]),
    ("ehlo-non-ascii", {}, "EHLO héllo\r\n".encode(), ["501 5.5.2"]),
    ("lhlo-in-smtp", {}, b"LHLO client.test\r\n", ["500 5.5.2"]),
    ("helo-in-lmtp", {"lmtp": True}, b"HELO client.test\r\n", ["500 5.5.1"]),
    ("ehlo-in-lmtp", {"lmtp": True}, EHLO, ["500 5.5.1"]),
    ("lhlo-in-lmtp", {"lmtp": True}, b"LHLO client.test\r\n", ["250"]),
    # unknown, unimplemented, malformed lines
    ("unknown", {}, b"FOO bar\r\n", ["500 5.5.2"]),
    ("empty-line", {}, b"\r\n", ["500 5.5.2"]),
    ("binary-verb", {}, b"\xff\xfe\r\n", ["500 5.5.2"]),
    ("turn", {}, b"TURN\r\n", ["502 5.5.1"]),
    ("etrn", {}, b"ETRN example.com\r\n", ["502 5.5.1"]),
    ("send", {}, b"SEND FROM:<a@b>\r\n", ["502 5.5.1"]),
    ("soml", {}, b"SOML FROM:<a@b>\r\n", ["502 5.5.1"]),
    ("saml", {}, b"SAML FROM:<a@b>\r\n", ["502 5.5.1"]),
    ("bare-lf-in-command", {}, b"NOOP\nQUIT\r\n", ["500 5.5.2"]),
    ("bare-cr-in-command", {}, b"NOOP\rQUIT\r\n", ["500 5.5.2"]),
    ("lf-only-never-ends", {}, b"NOOP\nNOOP\n", []),
    ("line-too-long", {}, b"NOOP " + b"x" * 600 + b"\r\n", ["500 5.5.2"]),
    ("line-512-ok", {}, b"NOOP " + b"x" * 505 + b"\r\n", ["250 2.0.0"]),
    ("line-513-too-long", {}, b"NOOP " + b"x" * 506 + b"\r\n", ["500 5.5.2"]),
    ("huge-line", {}, b"X" * 100_000 + b"\r\nNOOP\r\n", ["500 5.5.2", "250 2.0.0"]),
    # HTTP cross-protocol
    ("http-get", {}, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ["421 4.7.0"]),
    ("http-post", {}, b"POST /form HTTP/1.0\r\n", ["421 4.7.0"]),
    ("http-connect", {}, b"CONNECT mx:25 HTTP/1.1\r\n", ["421 4.7.0"]),
    ("get-without-space", {}, b"GET\r\n", ["500 5.5.2"]),
    # NOOP, RSET, QUIT, HELP, VRFY, EXPN
    ("noop", {}, b"NOOP\r\n", ["250 2.0.0"]),
    ("noop-arg", {}, b"NOOP anything\r\n", ["250 2.0.0"]),
    ("rset", {}, b"RSET\r\n", ["250 2.0.0"]),
    ("rset-in-tx", {}, TX + b"RSET\r\nRCPT TO:<x@y.test>\r\n", ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "503 5.5.1"]),
    ("rset-arg", {}, b"RSET now\r\n", ["501 5.5.4"]),
    ("quit", {}, b"QUIT\r\n", ["221 2.0.0"]),
    ("quit-ignores-rest", {}, b"QUIT\r\nNOOP\r\nNOOP\r\n", ["221 2.0.0"]),
    ("quit-arg", {}, b"QUIT now\r\n", ["501 5.5.4"]),
    ("help", {}, b"HELP\r\n", ["214 2.0.0"]),
    ("help-arg", {}, b"HELP MAIL\r\n", ["214 2.0.0"]),
    ("vrfy", {}, b"VRFY bob\r\n", ["252 2.5.0"]),
    ("vrfy-missing", {}, b"VRFY\r\n", ["501 5.5.4"]),
    ("vrfy-disabled", {"vrfy_enabled": False}, b"VRFY bob\r\n", ["502 5.5.1"]),
    ("expn-default", {}, b"EXPN list\r\n", ["502 5.5.1"]),
    ("expn-enabled", {"expn_enabled": True}, b"EXPN list\r\n", ["252 2.5.0"]),
    ("expn-enabled-missing", {"expn_enabled": True}, b"EXPN\r\n", ["501 5.5.4"]),
    # MAIL
    ("mail", {}, EHLO + MAIL, ["250", "250 2.1.0"]),
    ("mail-lowercase", {}, EHLO + b"mail from:<a@b.test>\r\n", ["250", "250 2.1.0"]),
    ("mail-null", {}, EHLO + b"MAIL FROM:<>\r\n", ["250", "250 2.1.0"]),
    ("mail-before-helo", {}, MAIL, ["503 5.5.1"]),
    ("mail-nested", {}, EHLO + MAIL + MAIL, ["250", "250 2.1.0", "503 5.5.1"]),
    ("mail-no-from", {}, EHLO + b"MAIL <a@b.test>\r\n", ["250", "501 5.5.4"]),
    ("mail-bad-path", {}, EHLO + b"MAIL FROM:a@b.test\r\n", ["250", "501 5.1.7"]),
    ("mail-too-long-local", {}, EHLO + b"MAIL FROM:<" + b"a" * 65 + b"@b.test>\r\n", ["250", "501 5.1.7"]),
    ("mail-params-after-helo", {}, b"HELO c.test\r\nMAIL FROM:<a@b.test> SIZE=10\r\n", ["250", "555 5.5.4"]),
    ("mail-no-params-after-helo", {}, b"HELO c.test\r\n" + MAIL, ["250", "250 2.1.0"]),
    ("mail-unknown-param", {}, EHLO + b"MAIL FROM:<a@b.test> XFOO=1\r\n", ["250", "555 5.5.4"]),
    ("mail-dup-param", {}, EHLO + b"MAIL FROM:<a@b.test> RET=FULL RET=HDRS\r\n", ["250", "501 5.5.4"]),
    ("mail-bad-value", {}, EHLO + b"MAIL FROM:<a@b.test> BODY=9BIT\r\n", ["250", "501 5.5.4"]),
    ("mail-size-too-big", {"max_message_size": 1000}, EHLO + b"MAIL FROM:<a@b.test> SIZE=1001\r\n", ["250", "552 5.3.4"]),
    ("mail-size-ok", {"max_message_size": 1000}, EHLO + b"MAIL FROM:<a@b.test> SIZE=1000\r\n", ["250", "250 2.1.0"]),
    ("mail-all-params", {}, EHLO + b"MAIL FROM:<a@b.test> SIZE=1 BODY=8BITMIME RET=FULL ENVID=x AUTH=<> SMTPUTF8\r\n", ["250", "250 2.1.0"]),
    ("mail-bad-utf8", {}, EHLO + b"MAIL FROM:<\xff@b.test> SMTPUTF8\r\n", ["250", "501 5.5.2"]),
    ("mail-utf8-without-smtputf8", {}, EHLO + "MAIL FROM:<ü@b.test>\r\n".encode(), ["250", "553 5.6.7"]),
    ("mail-utf8-with-smtputf8", {}, EHLO + "MAIL FROM:<ü@bü.test> SMTPUTF8\r\n".encode(), ["250", "250 2.1.0"]),
    ("mail-long-line-ok", {}, EHLO + b"MAIL FROM:<a@b.test> AUTH=" + b"x" * 500 + b"\r\n", ["250", "250 2.1.0"]),
    ("mail-line-too-long", {}, EHLO + b"MAIL FROM:<a@b.test> AUTH=" + b"x" * 1200 + b"\r\n", ["250", "500 5.5.2"]),
    # RCPT
    ("rcpt", {}, TX, ["250", "250 2.1.0", "250 2.1.5"]),
    ("rcpt-before-mail", {}, EHLO + RCPT, ["250", "503 5.5.1"]),
    ("rcpt-before-helo", {}, RCPT, ["503 5.5.1"]),
    ("rcpt-bad-utf8", {}, EHLO + b"MAIL FROM:<a@b.test> SMTPUTF8\r\nRCPT TO:<\xc3@d.test>\r\n", ["250", "250 2.1.0", "501 5.5.2"]),
    ("rcpt-bad", {}, EHLO + MAIL + b"RCPT TO:<>\r\n", ["250", "250 2.1.0", "501 5.1.3"]),
    ("rcpt-no-to", {}, EHLO + MAIL + b"RCPT <c@d.test>\r\n", ["250", "250 2.1.0", "501 5.5.4"]),
    ("rcpt-postmaster", {}, EHLO + MAIL + b"RCPT TO:<POSTMASTER>\r\n", ["250", "250 2.1.0", "250 2.1.5"]),
    ("rcpt-dsn", {}, EHLO + MAIL + b"RCPT TO:<c@d.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c@d.test\r\n", ["250", "250 2.1.0", "250 2.1.5"]),
    ("rcpt-unknown-param", {}, EHLO + MAIL + b"RCPT TO:<c@d.test> SIZE=1\r\n", ["250", "250 2.1.0", "555 5.5.4"]),
    ("rcpt-bad-notify", {}, EHLO + MAIL + b"RCPT TO:<c@d.test> NOTIFY=NEVER,DELAY\r\n", ["250", "250 2.1.0", "501 5.5.4"]),
    ("rcpt-utf8-not-smtputf8", {}, EHLO + MAIL + "RCPT TO:<ü@d.test>\r\n".encode(), ["250", "250 2.1.0", "553 5.6.7"]),
    ("rcpt-utf8-smtputf8", {}, EHLO + b"MAIL FROM:<a@b.test> SMTPUTF8\r\n" + "RCPT TO:<ü@d.test>\r\n".encode(), ["250", "250 2.1.0", "250 2.1.5"]),
    ("rcpt-too-many", {"max_recipients": 2}, TX + b"RCPT TO:<e@d.test>\r\nRCPT TO:<f@d.test>\r\n", ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "452 4.5.3"]),
    ("rcpt-line-1042-ok", {}, EHLO + MAIL + b"RCPT TO:<c@d.test> X-PAD=" + b"p" * 1015 + b"\r\n", ["250", "250 2.1.0", "555 5.5.4"]),
    ("rcpt-line-1043-too-long", {}, EHLO + MAIL + b"RCPT TO:<c@d.test> X-PAD=" + b"p" * 1016 + b"\r\n", ["250", "250 2.1.0", "500 5.5.2"]),
    ("mail-line-1184-ok", {}, EHLO + b"MAIL FROM:<a@b.test> X-PAD=" + b"p" * 1155 + b"\r\n", ["250", "555 5.5.4"]),
    ("mail-line-1185-too-long", {}, EHLO + b"MAIL FROM:<a@b.test> X-PAD=" + b"p" * 1156 + b"\r\n", ["250", "500 5.5.2"]),
    ("auth-line-long-ok", {"auth_mechanisms": ("XOAUTH2",), "auth_requires_tls": False}, EHLO + b"AUTH XOAUTH2 " + b"QUFB" * 2000 + b"\r\n", ["250", "235 2.7.0"]),
    ("rcpt-line-too-long", {}, EHLO + MAIL + b"RCPT TO:<c@d.test> X=" + b"x" * 1100 + b"\r\n", ["250", "250 2.1.0", "500 5.5.2"]),
    # DATA
    ("data", {}, TX + b"DATA\r\n", ["250", "250 2.1.0", "250 2.1.5", "354"]),
    ("data-before-mail", {}, EHLO + b"DATA\r\n", ["250", "503 5.5.1"]),
    ("data-no-rcpt", {}, EHLO + MAIL + b"DATA\r\n", ["250", "250 2.1.0", "554 5.5.1"]),
    ("data-arg", {}, TX + b"DATA now\r\n", ["250", "250 2.1.0", "250 2.1.5", "501 5.5.4"]),
    ("data-binarymime", {}, EHLO + b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n" + RCPT + b"DATA\r\n", ["250", "250 2.1.0", "250 2.1.5", "503 5.5.1"]),
    ("data-full", {}, TX + b"DATA\r\nhi\r\n.\r\n", ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]),
    ("data-lmtp-no-rcpt", {"lmtp": True}, b"LHLO c.test\r\n" + MAIL + b"DATA\r\n", ["250", "250 2.1.0", "503 5.5.1"]),
    # BDAT syntax
    ("bdat-no-size", {}, TX + b"BDAT\r\n", ["250", "250 2.1.0", "250 2.1.5", "501 5.5.4"]),
    ("bdat-bad-size", {}, TX + b"BDAT x\r\n", ["250", "250 2.1.0", "250 2.1.5", "501 5.5.4"]),
    ("bdat-bad-last", {}, TX + b"BDAT 1 FIRST\r\n", ["250", "250 2.1.0", "250 2.1.5", "501 5.5.4"]),
    ("bdat-chunk", {}, TX + b"BDAT 3\r\nabcBDAT 0 LAST\r\n", ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"]),
    ("bdat-last-lowercase", {}, TX + b"bdat 2 last\r\nab", ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0"]),
    ("bdat-before-mail", {}, EHLO + b"BDAT 6\r\nNOOP\r\nNOOP\r\n", ["250", "503 5.5.1", "250 2.0.0"]),
    ("bdat-no-rcpt", {}, EHLO + MAIL + b"BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n", ["250", "250 2.1.0", "554 5.5.1", "250 2.0.0"]),
    # STARTTLS
    ("starttls-unavailable", {}, EHLO + b"STARTTLS\r\n", ["250", "502 5.5.1"]),
    ("starttls", {"starttls_available": True}, EHLO + b"STARTTLS\r\n", ["250", "220 2.0.0"]),
    ("starttls-before-ehlo", {"starttls_available": True}, b"STARTTLS\r\n", ["220 2.0.0"]),
    ("starttls-arg", {"starttls_available": True}, EHLO + b"STARTTLS now\r\n", ["250", "501 5.5.4"]),
    ("starttls-in-tx", {"starttls_available": True}, EHLO + MAIL + b"STARTTLS\r\n", ["250", "250 2.1.0", "503 5.5.1"]),
    # AUTH
    ("auth-unavailable", {}, EHLO + b"AUTH PLAIN\r\n", ["250", "502 5.5.1"]),
    ("auth-needs-tls", {"auth_mechanisms": ("PLAIN",)}, EHLO + b"AUTH PLAIN\r\n", ["250", "538 5.7.11"]),
    ("auth-plain-initial", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", ["250", "235 2.7.0"]),
    ("auth-lowercase-mech", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"auth plain =\r\n", ["250", "235 2.7.0"]),
    ("auth-unknown-mech", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"AUTH CRAM-MD5\r\n", ["250", "504 5.5.4"]),
    ("auth-no-mech", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"AUTH\r\n", ["250", "501 5.5.4"]),
    ("auth-extra-args", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"AUTH PLAIN a b\r\n", ["250", "501 5.5.4"]),
    ("auth-bad-base64", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"AUTH PLAIN !!!\r\n", ["250", "501 5.5.2"]),
    ("auth-before-ehlo", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, b"AUTH PLAIN =\r\n", ["503 5.5.1"]),
    ("auth-in-tx", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + MAIL + b"AUTH PLAIN =\r\n", ["250", "250 2.1.0", "503 5.5.1"]),
    ("auth-twice", {"auth_mechanisms": ("PLAIN",), "auth_requires_tls": False}, EHLO + b"AUTH PLAIN =\r\nAUTH PLAIN =\r\n", ["250", "235 2.7.0", "503 5.5.1"]),
    # require_tls (RFC 3207 §4)
    ("require-tls-mail", {"require_tls": True, "starttls_available": True}, EHLO + MAIL, ["250", "530 5.7.0"]),
    ("require-tls-noop", {"require_tls": True, "starttls_available": True}, b"NOOP\r\nHELO x.test\r\n", ["250 2.0.0", "530 5.7.0"]),
    ("require-tls-bdat", {"require_tls": True}, EHLO + b"BDAT 4\r\nNOOPNOOP\r\n", ["250", "530 5.7.0", "250 2.0.0"]),
]
# fmt: on


@pytest.mark.parametrize(("name", "cfg", "script", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_command_table(
    name: str, cfg: dict[str, object], script: bytes, expected: list[str]
) -> None:
    driver = Driver(config(**cfg))
    assert driver.codes(script) == expected


@pytest.mark.parametrize(("name", "cfg", "script", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_command_table_byte_by_byte(
    name: str, cfg: dict[str, object], script: bytes, expected: list[str]
) -> None:
    driver = Driver(config(**cfg))
    out = bytearray()
    for i in range(len(script)):
        out += driver.feed(script[i : i + 1])
    assert reply_codes(bytes(out)) == expected
