"""The server session state machine: every state rule lives in this file.

Rule 1 (after h11's ``_state.py``): the server core never assigns a state except through
``transition()``, and never accepts a command in a state except through ``refusal()``.
Both are tables, so the whole machine can be read (and printed) here:

    CONNECTED --HELO--> GREETED --MAIL--> MAIL --RCPT--> RCPT --DATA--> DATA --BODY_END--┐
        │                 ▲ ▲  │                         │  └--BDAT--> CHUNKING --BODY_END-┤
        │                 │ │  └--AUTH_START--> AUTH --AUTH_END--┘                          │
        │                 │ └───────────────────────────────────────────────────────────────┘
        └--STARTTLS--> TLS --TLS_DONE--> CONNECTED        (GREETED --STARTTLS--> TLS too)
    RESET (RSET, HELO/EHLO in a transaction, refused DATA): MAIL/RCPT/CHUNKING --> GREETED
    CLOSE (QUIT, limits, driver close): any --> CLOSED

RFC 5321 §4.1.4 (order of commands), RFC 3030 §2-3 (BDAT/DATA mixing, BINARYMIME),
RFC 3207 §4.2 (fresh state after TLS), RFC 4954 §4 (no AUTH inside a transaction),
RFC 1985 §5 (ETRN after the greeting, never inside a transaction).
Not security sensitive by itself, but a wrong entry here is a protocol bug.
"""

from __future__ import annotations

import enum

from kittiwake.envelope import Reply
from kittiwake.errors import LocalProtocolError
from kittiwake.proto import replies


class State(enum.Enum):
    CONNECTED = "connected"  # greeting sent; no HELO/EHLO/LHLO accepted yet
    GREETED = "greeted"  # HELO/EHLO/LHLO accepted; no transaction
    MAIL = "mail"  # MAIL accepted; no RCPT accepted yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # 354 sent; reading the content up to <CRLF>.<CRLF>
    CHUNKING = "chunking"  # the first BDAT was accepted; more BDAT until LAST
    AUTH = "auth"  # 334 sent; the next line answers the challenge
    TLS = "tls"  # 220 to STARTTLS sent; waiting for tls_established()
    CLOSED = "closed"  # QUIT answered or the session was closed; input is ignored

    # Members are singletons: identity hashing is correct and avoids Enum's Python-level
    # __hash__ on the per-command path (table lookups).
    __hash__ = object.__hash__


class Trigger(enum.Enum):
    HELO = "helo"  # HELO/EHLO/LHLO accepted
    MAIL = "mail"  # MAIL accepted
    RCPT = "rcpt"  # RCPT accepted
    DATA = "data"  # DATA accepted (354)
    BDAT = "bdat"  # first BDAT of the transaction accepted
    BODY_END = "body_end"  # the end of the content was answered or failed
    RESET = "reset"  # the transaction is dropped
    AUTH_START = "auth_start"  # 334 sent
    AUTH_END = "auth_end"  # AUTH succeeded, failed or was cancelled
    STARTTLS = "starttls"  # 220 sent
    TLS_DONE = "tls_done"  # the driver finished the handshake
    CLOSE = "close"

    __hash__ = object.__hash__  # see State


S, T = State, Trigger

_TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (S.CONNECTED, T.HELO): S.GREETED,
    (S.GREETED, T.HELO): S.GREETED,
    (S.GREETED, T.MAIL): S.MAIL,
    (S.MAIL, T.RCPT): S.RCPT,
    (S.RCPT, T.RCPT): S.RCPT,
    (S.RCPT, T.DATA): S.DATA,
    (S.RCPT, T.BDAT): S.CHUNKING,
    (S.DATA, T.BODY_END): S.GREETED,
    (S.CHUNKING, T.BODY_END): S.GREETED,
    (S.CONNECTED, T.RESET): S.CONNECTED,
    (S.GREETED, T.RESET): S.GREETED,
    (S.MAIL, T.RESET): S.GREETED,
    (S.RCPT, T.RESET): S.GREETED,
    (S.CHUNKING, T.RESET): S.GREETED,
    (S.GREETED, T.AUTH_START): S.AUTH,
    (S.AUTH, T.AUTH_END): S.GREETED,
    (S.CONNECTED, T.STARTTLS): S.TLS,
    (S.GREETED, T.STARTTLS): S.TLS,
    (S.TLS, T.TLS_DONE): S.CONNECTED,
    **{(state, T.CLOSE): S.CLOSED for state in State},
}

# States in which the next input is a command line.
COMMAND_STATES = frozenset({S.CONNECTED, S.GREETED, S.MAIL, S.RCPT, S.CHUNKING})
# States inside a mail transaction (RFC 5321 §3.3).
TRANSACTION_STATES = frozenset({S.MAIL, S.RCPT, S.DATA, S.CHUNKING})

# Commands refused in a command state, with the reply. Anything not listed is allowed:
# NOOP, RSET, QUIT, HELP, VRFY, EXPN, HELO/EHLO/LHLO everywhere (RFC 5321 §4.1.4).
_REFUSALS: dict[State, dict[str, Reply]] = {
    S.CONNECTED: {
        "MAIL": replies.NEED_HELO,
        "RCPT": replies.NEED_HELO,
        "DATA": replies.NEED_HELO,
        "BDAT": replies.NEED_HELO,
        "AUTH": replies.NEED_HELO,
        "ETRN": replies.NEED_HELO,
    },
    S.GREETED: {
        "RCPT": replies.NEED_MAIL,
        "DATA": replies.NEED_MAIL,
        "BDAT": replies.NEED_MAIL,
    },
    S.MAIL: {
        "MAIL": replies.NESTED_MAIL,
        "DATA": replies.NO_VALID_RECIPIENTS,
        "BDAT": replies.NO_VALID_RECIPIENTS,
        "AUTH": replies.IN_TRANSACTION,
        "STARTTLS": replies.IN_TRANSACTION,
        "ETRN": replies.IN_TRANSACTION,  # RFC 1985 §5: not between MAIL and end of DATA
    },
    S.RCPT: {
        "MAIL": replies.NESTED_MAIL,
        "AUTH": replies.IN_TRANSACTION,
        "STARTTLS": replies.IN_TRANSACTION,
        "ETRN": replies.IN_TRANSACTION,  # RFC 1985 §5: not between MAIL and end of DATA
    },
    S.CHUNKING: {
        "MAIL": replies.NESTED_MAIL,
        "RCPT": replies.RCPT_AFTER_BDAT,
        "DATA": replies.DATA_AFTER_BDAT,  # RFC 3030 §2
        "AUTH": replies.IN_TRANSACTION,
        "STARTTLS": replies.IN_TRANSACTION,
        "ETRN": replies.IN_TRANSACTION,  # RFC 1985 §5: not between MAIL and end of DATA
    },
}

# RFC 3207 §4: when TLS is required, 530 to "every command other than NOOP, EHLO,
# STARTTLS, or QUIT" (LHLO is LMTP's EHLO).
TLS_EXEMPT = frozenset({"NOOP", "EHLO", "LHLO", "STARTTLS", "QUIT"})


def transition(state: State, trigger: Trigger) -> State:
    """The state after ``trigger``; a missing entry is a bug in the core (or its driver)."""
    try:
        return _TRANSITIONS[state, trigger]
    except KeyError:
        raise LocalProtocolError(f"no transition from {state.name} on {trigger.name}") from None


def refusal(state: State, verb: str) -> Reply | None:
    """The reply refusing ``verb`` in ``state`` (a command state), or None if allowed."""
    return _REFUSALS[state].get(verb)
