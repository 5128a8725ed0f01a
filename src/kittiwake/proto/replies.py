"""Canned replies of the server core, each with its enhanced status code.

Owns every ``Reply`` the core produces by itself. Codes follow RFC 5321 §4.2; enhanced codes
RFC 3463 / RFC 5248 (the IANA registry); RFC 2034 §3 exempts only the greeting and the
HELO/EHLO replies, and class 3 replies (354, 334) have no enhanced code at all.
Texts are fixed strings: nothing here echoes client input. Not security sensitive.
"""

from __future__ import annotations

from kittiwake.envelope import Reply

# -------------------------------------------------------------------------------- positive
OK = Reply(250, "2.0.0", "OK")
MAIL_OK = Reply(250, "2.1.0", "Sender OK")
RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
RSET_OK = Reply(250, "2.0.0", "Reset OK")
BYE = Reply(221, "2.0.0", "Bye")
HELP = Reply(
    214,
    "2.0.0",
    (
        "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        "See RFC 5321",
    ),
)
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
DATA_GO = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
STARTTLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")


def bdat_ok(octets: int) -> Reply:
    """Reply to a non-LAST BDAT chunk (RFC 3030 §2)."""
    return Reply(250, "2.0.0", f"{octets} octets received")


# ------------------------------------------------------------------- syntax (500/501/555)
UNRECOGNIZED = Reply(500, "5.5.2", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_NEWLINE = Reply(500, "5.5.2", "Bare CR or LF in command line")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line too long")  # RFC 4954 §4
LMTP_USE_LHLO = Reply(500, "5.5.1", "This is LMTP: use LHLO")
BAD_UTF8 = Reply(501, "5.5.2", "Invalid UTF-8 in command")
NO_PARAMS = Reply(501, "5.5.4", "Syntax error: no parameters allowed")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname")
HELO_BAD = Reply(501, "5.5.2", "Invalid domain name")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax: VRFY address")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
SENDER_TOO_LONG = Reply(501, "5.1.7", "Sender address too long")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
RECIPIENT_TOO_LONG = Reply(501, "5.1.3", "Recipient address too long")
PARAM_SYNTAX = Reply(501, "5.5.4", "Invalid parameter syntax")
PARAM_BAD = Reply(501, "5.5.4", "Invalid parameter value")
PARAM_DUPLICATE = Reply(501, "5.5.4", "Duplicate parameter")
PARAM_UNKNOWN = Reply(555, "5.5.4", "Unsupported parameter")
PARAM_NEED_EHLO = Reply(555, "5.5.4", "Parameters need EHLO")
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Invalid base64 data")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.3
# RFC 1985 §5.1 and its §7 example: "ETRN" alone is 500, a bad node name 501.
ETRN_SYNTAX = Reply(500, "5.5.2", "Syntax: ETRN [@|#]node")
ETRN_BAD_NODE = Reply(501, "5.5.4", "Syntax error in parameters: ETRN domain, @domain or #queue")

# --------------------------------------------------------------------- not implemented (502)
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
AUTH_NOT_AVAILABLE = Reply(502, "5.5.1", "Authentication not available")
STARTTLS_NOT_AVAILABLE = Reply(502, "5.5.1", "STARTTLS not available")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")

# ------------------------------------------------------------------------- sequence (503)
NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "No valid recipients")  # LMTP, RFC 2033 §4.2
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "RCPT not allowed after BDAT")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT")  # RFC 3030 §2
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")  # RFC 3030 §3
IN_TRANSACTION = Reply(503, "5.5.1", "Not allowed during a mail transaction")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 5321 §3.3
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 §4
# RFC 4954 §6: AUTH on a listener that offers it only under TLS, before STARTTLS.
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")

# ------------------------------------------------------------------------ limits, content
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")  # RFC 1870
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
BODY_LINE_TOO_LONG = Reply(550, "5.6.0", "Message line longer than 1000 octets")
BARE_LINEFEED = Reply(550, "5.6.0", "Bare CR or LF in message content not allowed")

# ------------------------------------------------------------------------------- closing
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands, closing connection")
HTTP_REFUSED = Reply(421, "4.7.0", "This is an SMTP server, not HTTP; closing connection")

# Core replies that count toward ``max_bad_commands`` (syntax and sequence errors).
COUNTED_CODES = frozenset({500, 501, 502, 503, 504, 530, 538, 555})
