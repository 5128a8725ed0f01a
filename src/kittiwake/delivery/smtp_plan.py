"""What to send to a given peer, and what its replies mean per recipient.

Owns the decisions shared by the SMTP and LMTP agents once a peer's EHLO/LHLO
capabilities are known:

* ``message_problem`` — the message-scope refusals we make ourselves before MAIL (like
  Postfix, these bounce the message: a retry would meet the same peer): SMTPUTF8 to a peer
  without it → 5.6.7 (RFC 6531 §3.4), a message over the peer's SIZE → 5.3.4 (RFC 1870 §6),
  BINARYMIME to a peer without CHUNKING+BINARYMIME → 5.6.3 (RFC 3030 §3).
* ``plan_mail``/``plan_recipients`` — MAIL and RCPT parameters: SIZE when offered, BODY
  when the peer understands it (8-bit content to a peer without 8BITMIME goes converted to
  7-bit MIME, without BODY=, see ``smtp_downgrade``; RFC 6152 §3), RET/ENVID and
  NOTIFY/ORCPT only to a DSN peer (RFC 3461 §5.2).
* ``recipient_replies`` — the reply that decides each recipient (RFC 5321 §3.3 and
  RFC 2033 §4.2: MAIL refusal → everyone; RCPT refusal → that one; DATA/BDAT refusal or
  the final reply → every accepted one; LMTP → one final reply each).
* ``as_transient`` — a DEFERRED outcome always carries a 4xx reply.

Not security sensitive (addresses are re-checked by ``proto.client`` before sending).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kittiwake.delivery.api import QueuedMessage, QueuedRecipient
from kittiwake.delivery.smtp_transaction import TxMail, TxRecipient, TxResult
from kittiwake.envelope import BodyType, Reply
from kittiwake.errors import LocalProtocolError
from kittiwake.proto.client_encode import check_path
from kittiwake.proto.client_replies import Capabilities

BAD_RECIPIENT = Reply(553, "5.1.3", "recipient address cannot be sent over SMTP")
BAD_SENDER = Reply(553, "5.1.7", "sender address cannot be sent over SMTP")


def message_problem(message: QueuedMessage, caps: Capabilities, peer: str) -> Reply | None:
    env = message.envelope
    if env.smtputf8 and not caps.smtputf8:
        return Reply(550, "5.6.7", f"SMTPUTF8 is required, but was not offered by host {peer}")
    if (too_big := size_problem(message.size, caps, peer)) is not None:
        return too_big
    if env.body_type is BodyType.BINARYMIME and not (caps.chunking and caps.binarymime):
        return Reply(
            554, "5.6.3", f"BINARYMIME message, but host {peer} does not offer BINARYMIME+CHUNKING"
        )
    try:
        check_path(env.sender, utf8=env.smtputf8)
    except LocalProtocolError:
        return BAD_SENDER
    return None


def size_problem(size: int, caps: Capabilities, peer: str) -> Reply | None:
    if caps.size and size > caps.size:
        text = f"message size {size} exceeds size limit {caps.size} of server {peer}"
        return Reply(552, "5.3.4", text)
    return None


def plan_mail(message: QueuedMessage, caps: Capabilities, size: int | None = None) -> TxMail:
    """``size``: what SIZE= declares when it is not the spool file's (a converted body)."""
    env = message.envelope
    body: BodyType | None = None
    if env.body_type is BodyType.BINARYMIME:
        body = BodyType.BINARYMIME  # message_problem made sure the peer takes it
    elif env.body_type is BodyType.EIGHTBITMIME and caps.eightbitmime:
        body = BodyType.EIGHTBITMIME
    return TxMail(
        sender=env.sender,
        size=(message.size if size is None else size) if caps.size is not None else None,
        body=body,
        smtputf8=env.smtputf8,
        ret=env.ret if caps.dsn else None,
        envid=env.envid if caps.dsn else None,
    )


def plan_recipients(
    message: QueuedMessage, recipients: Iterable[QueuedRecipient], caps: Capabilities
) -> tuple[list[TxRecipient], dict[int, Reply]]:
    """RCPTs to send, and the recipients we refuse ourselves (unsendable addresses)."""
    env = message.envelope
    send: list[TxRecipient] = []
    refused: dict[int, Reply] = {}
    for r in recipients:
        try:
            check_path(r.address, utf8=env.smtputf8)
        except LocalProtocolError:
            refused[r.index] = BAD_RECIPIENT
            continue
        notify = orcpt = None
        if caps.dsn and 0 <= r.index < len(env.recipients):
            original = env.recipients[r.index]
            notify, orcpt = original.notify, original.orcpt
        send.append(TxRecipient(r.index, r.address, notify, orcpt))
    return send, refused


def recipient_replies(
    result: TxResult, rcpts: Sequence[TxRecipient], *, lmtp: bool
) -> dict[int, Reply]:
    """The deciding reply of every recipient (of ``rcpts``, the transaction's) the peer
    has decided on (positive = accepted for delivery), by index. A recipient missing from
    the result is undecided (the connection failed before its answer)."""
    mail = result.mail
    if mail is None:
        return {}
    if not mail.is_positive:
        return dict.fromkeys((r.index for r in rcpts), mail)
    out = {i: r for i, r in result.rcpt.items() if not r.is_positive}
    if result.data is not None:
        out.update(dict.fromkeys(result.accepted, result.data))
    elif result.end:
        if lmtp:
            out.update(zip(result.accepted, result.end, strict=False))
        else:
            out.update(dict.fromkeys(result.accepted, result.end[0]))
    return out


def as_transient(reply: Reply) -> Reply:
    """``reply`` as a 4xx (a 5xx that must not bounce, e.g. a greeting: Postfix's
    ``smtp_skip_5xx_greeting`` does the same)."""
    if reply.code < 500:
        return reply
    enhanced = "4" + reply.enhanced[1:] if reply.enhanced else "4.0.0"
    return Reply(reply.code - 100, enhanced, reply.text)
