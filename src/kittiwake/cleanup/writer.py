"""The only way into the queue: trace header, body, hop count, commit.

Owns ``received_header`` (the RFC 5321 §4.4 time-stamp line), ``protocol_keyword``
(RFC 3848 / RFC 6531 §3.7.3 "with" values), ``HopCounter`` (the RFC 5321 §6.3 loop check)
and ``Cleanup`` / ``CleanupSink``, which the SMTP session driver uses like this (it matches
``smtpd.intake.Intake``)::

    sink = cleanup.begin(session_info, envelope)  # at DATA/BDAT: Received written first
    sink.write(chunk)                             # body octets as received (CRLF, unstuffed)
    message = await sink.commit(envelope)         # durable: now "250 ... queued as <id>"
    sink.abort()                                  # on failure; idempotent, no-op after commit

``commit`` raises ``MessageRefused`` (carrying ``554 5.4.6 Too many hops``) when the
message's own header section holds more than ``max_hops`` Received fields: the session
answers that reply at end of data, so the loop is the *sending* MTA's to report (no bounce
from us, no backscatter). Mail generated here (``Cleanup.begin_local``: notices, local
injection) has no SMTP client to refuse: its sink never raises, it exposes
``hops_exceeded`` and the injector bounces the message with 5.4.6 instead
(``cleanup.notices.NoticeSender.bounce_now``).

Security sensitive: everything in the trace header except our own hostname and queue id
comes from the client (HELO, TLS names, recipient), so each piece is checked or sanitised
before it is written: no CR/LF, no control characters, no parentheses breaking out of a
comment, every line under 998 octets (RFC 5322 §2.1.1). No reverse DNS is ever looked up;
the client is named by its IP address only. The ``for`` clause is written only for a
single recipient, so that a Bcc list is never disclosed (RFC 5321 §7.2).
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import datetime

from kittiwake.cleanup.expand import Expander, Fork
from kittiwake.cleanup.rewrite import HeaderRewriter, RewriteSettings, Submission, is_submission
from kittiwake.envelope import Envelope, Recipient, Reply, SessionInfo
from kittiwake.errors import KittiwakeError, StoreError
from kittiwake.queue.api import QueuedMessage, SpoolWriter, Store

# RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 5321 §4.1.3 address-literal, loosely: the session layer has parsed it already.
_LITERAL_RE = re.compile(r"\[[A-Za-z0-9:.]{1,60}\]")
_TOKEN_RE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_LINE = 998  # RFC 5322 §2.1.1, CRLF excluded
MAX_HOPS = 50  # the issue and Postfix (hopcount_limit); RFC 5321 §6.3 says "normally at least 100"
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops")  # RFC 3463 §3.5: routing loop detected


class MessageRefused(KittiwakeError):
    """The content of a message is refused at commit time; ``reply`` is what to answer."""

    def __init__(self, queue_id: str, reply: Reply) -> None:
        super().__init__(f"{queue_id}: {reply}")
        self.queue_id = queue_id
        self.reply = reply


class HopCounter:
    """Counts ``Received:`` fields in a message's header section as it streams by.

    RFC 5321 §6.3: a loop is detected by counting Received fields. Only the header section
    counts (a Received line in the body, e.g. a forwarded message, does not); scanning stops
    at the blank line, so the cost is bounded by the header size, and each chunk is scanned
    with regular expressions, not line by line in Python. A line split across chunks is
    handled: the start of an unfinished line is carried over (at most ``_KEEP`` octets,
    enough to classify it). The name may be followed by blanks before the colon
    (RFC 5322 §4.5.3 obsolete syntax); case does not matter (RFC 5322 §1.2.2).
    """

    __slots__ = ("_partial", "count", "done")
    _KEEP = 32

    def __init__(self) -> None:
        self.count = 0
        self.done = False  # the header section has ended
        # The start of the current, unfinished line; None: the line is classified already
        # (only its end is awaited).
        self._partial: bytes | None = b""

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        if self._partial is None:
            nl = data.find(b"\n")
            if nl < 0:
                return
            data, self._partial = data[nl + 1 :], b""
        buf = self._partial + data
        end = _HEADERS_END_RE.search(buf)
        if end is not None:  # only the complete lines before the blank line count
            self.count += len(_RECEIVED_RE.findall(buf, 0, end.start() + 1))
            self.done = True
            return
        last = buf.rfind(b"\n") + 1
        self.count += len(_RECEIVED_RE.findall(buf, 0, last))
        tail = buf[last:]
        if len(tail) < self._KEEP:
            self._partial = tail
        else:  # long enough to decide now; then wait for its end
            self.count += _RECEIVED_RE.match(tail) is not None
            self._partial = None


# A Received field name at a line start; the blank line that ends the header section.
_RECEIVED_RE = re.compile(rb"(?:^|(?<=\n))received[ \t]*:", re.IGNORECASE)
_HEADERS_END_RE = re.compile(rb"(?:^|\n)\r?\n")


def protocol_keyword(session: SessionInfo, *, smtputf8: bool = False) -> str:
    """The ``with`` protocol: RFC 3848 (ESMTP, ESMTPA, ESMTPS, ESMTPSA, LMTP...) and
    RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA, UTF8LMTP...)."""
    lmtp = session.listener == "lmtp"
    if not lmtp and not session.esmtp:
        return "SMTP"  # HELO: no extensions, so no TLS, AUTH or SMTPUTF8 either
    base = "LMTP" if lmtp else "SMTP"
    if smtputf8:
        base = "UTF8" + base
    elif not lmtp:
        base = "ESMTP"
    return base + ("S" if session.tls else "") + ("A" if session.auth_user else "")


def address_literal(ip: str) -> str:
    """RFC 5321 §4.1.3 address literal: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "[" + _TOKEN_RE.sub("", ip)[:60] + "]"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"[{addr.ipv4_mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def _comment_text(text: str, limit: int) -> str:
    """Printable ASCII that cannot end a comment or start a new line."""
    out = "".join(c if " " < c < "\x7f" and c not in "()\\" else "?" for c in text)
    return out[:limit]


def _for_clause(recipients: Sequence[Recipient | str], smtputf8: bool) -> str | None:
    if len(recipients) != 1:
        return None  # several recipients: naming one would disclose a Bcc list
    r = recipients[0]
    address = r.address if isinstance(r, Recipient) else r
    if not address or any(c < " " or c == "\x7f" or c in "<>" for c in address):
        return None
    if not smtputf8 and not address.isascii():
        return None
    return f"for <{address}>"


def received_header(
    session: SessionInfo,
    envelope_recipients: Sequence[Recipient | str],
    queue_id: str,
    hostname: str,
    now: datetime | None = None,
    *,
    smtputf8: bool = False,
) -> bytes:
    """The ``Received:`` trace field we prepend to a message (RFC 5321 §4.4), CRLF-ended.

    ``from <helo> ([ip])`` when the HELO is a syntactically valid domain or address
    literal, else ``from [ip] (helo=<sanitised>)``; ``by <hostname> (Kittiwake) with
    <protocol> id <queue_id>``; a TLS comment when TLS is in use; ``for <rcpt>`` only for
    one recipient; ``; <RFC 5322 date>`` (local time, or ``now``; a naive ``now`` is taken
    as local time too). ``smtputf8`` selects the UTF8SMTP protocol family, and is the only
    case in which a non-ASCII recipient is written.
    """
    ip = address_literal(session.client_ip)
    helo = session.helo
    if helo and len(helo) <= 255 and (_DOMAIN_RE.fullmatch(helo) or _LITERAL_RE.fullmatch(helo)):
        lines = [f"Received: from {helo} ({ip})"]
    elif helo:
        lines = [f"Received: from {ip} (helo={_comment_text(helo, 255)})"]
    else:
        lines = [f"Received: from {ip}"]
    host = _TOKEN_RE.sub("", hostname)[:255] or "localhost"
    proto = protocol_keyword(session, smtputf8=smtputf8)
    lines.append(f"\tby {host} (Kittiwake) with {proto} id {_TOKEN_RE.sub('', queue_id)}")
    if session.tls:
        version = _TOKEN_RE.sub("", session.tls_version or "TLS")[:32]
        cipher = _TOKEN_RE.sub("", session.tls_cipher or "")[:64]
        lines.append(f"\t(using {version} with cipher {cipher})" if cipher else f"\t({version})")
    clause = _for_clause(envelope_recipients, smtputf8)
    if clause is not None and len(clause) < _MAX_LINE - 2:
        lines.append("\t" + clause)
    lines[-1] += ";"
    when = now if now is not None else datetime.now()
    if when.tzinfo is None:
        when = when.astimezone()  # naive: local time, with its real offset
    lines.append("\t" + email.utils.format_datetime(when))
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


class CleanupSink:
    """One message on its way into the queue (see the module docstring for the protocol).

    ``max_hops`` (None: no check) counts the Received fields of what is written; with
    ``refuse_loops`` a message over the limit makes ``commit`` raise ``MessageRefused``.
    A ``rewriter`` (submitted mail, RFC 6409 §8) fixes the header section on the way.
    A ``fork`` (``cleanup.expand``: alias expansion) decides the recipients committed and
    receives the same octets for a forwarded copy.
    """

    def __init__(
        self,
        store: Store,
        writer: SpoolWriter,
        envelope: Envelope,
        *,
        max_hops: int | None = None,
        refuse_loops: bool = True,
        rewriter: HeaderRewriter | None = None,
        fork: Fork | None = None,
    ) -> None:
        self._store = store
        self._fork = fork
        self._rewriter = rewriter
        self._writer = writer
        self._envelope = envelope
        self._committed = False
        self._max_hops = max_hops
        self._refuse = refuse_loops
        self._hops = HopCounter() if max_hops is not None else None

    @property
    def hops(self) -> int:
        """Received fields counted so far in the header section written (ours excluded)."""
        return self._hops.count if self._hops is not None else 0

    @property
    def hops_exceeded(self) -> bool:
        """More than ``max_hops`` Received fields: a mail loop (RFC 5321 §6.3)."""
        return self._max_hops is not None and self.hops > self._max_hops

    @property
    def queue_id(self) -> str:
        return self._writer.queue_id

    @property
    def size(self) -> int:
        """Octets in the spool so far, trace header included."""
        return self._writer.size

    def write(self, data: bytes) -> None:
        if self._rewriter is not None:
            data = self._rewriter.feed(data)
            if not data:
                return
        if self._hops is not None and not self._hops.done:
            self._hops.feed(data)
        self._writer.write(data)
        if self._fork is not None:
            self._fork.write(data)

    async def commit(self, envelope: Envelope | None = None) -> QueuedMessage:
        """Make the message durable; returns only after the store's fsyncs. ``envelope``
        defaults to the one given to ``begin``. Raises ``MessageRefused`` (the spool is
        dropped) for a mail loop when this sink refuses loops."""
        if self._committed:
            raise StoreError(f"{self.queue_id}: committed twice")
        if self._rewriter is not None and not self._rewriter.done:
            self.write(self._rewriter.finish())
        if self._refuse and self.hops_exceeded:
            self.abort()
            raise MessageRefused(self.queue_id, TOO_MANY_HOPS)
        env = envelope or self._envelope
        if self._fork is not None:  # alias expansion; a forwarded copy is committed first
            message = await self._fork.commit(self._store, self._writer, env)
        else:
            message = await self._store.commit(self._writer, env)
        self._committed = True
        return message

    def abort(self) -> None:
        """Forget the message; idempotent, and a no-op once ``commit`` has succeeded."""
        if not self._committed:
            self._writer.abort()
            if self._fork is not None:
                self._fork.abort()


class Cleanup:
    """Opens a spool writer per message and puts our ``Received:`` field first.

    ``clock`` returns the time stamp for the trace header (default: local now).
    ``max_hops`` is the Received count above which a message is a loop (None: no check).
    ``rewrite`` (None: never) fixes the headers of submitted mail (``cleanup.rewrite``).
    ``expander`` (None: none) expands aliases at commit (``cleanup.expand``); a forwarded
    copy it commits goes to ``on_forward`` (the scheduler's ``submit``).
    """

    def __init__(
        self,
        store: Store,
        hostname: str,
        *,
        clock: Callable[[], datetime] | None = None,
        max_hops: int | None = MAX_HOPS,
        rewrite: RewriteSettings | None = None,
        expander: Expander | None = None,
        on_forward: Callable[[QueuedMessage], None] | None = None,
    ) -> None:
        self.store = store
        self.expander = expander
        self.on_forward = on_forward
        self.rewrite = rewrite
        self.hostname = hostname
        self._clock = clock
        self.max_hops = max_hops

    def begin(
        self,
        session: SessionInfo,
        envelope: Envelope,
        *,
        prepend: bytes = b"",
        rewrite: bool = True,
    ) -> CleanupSink:
        """At the start of the body: ``envelope`` must hold every accepted recipient.
        ``prepend``: complete CRLF-ended header lines written above our Received field
        (the DATA checks' Authentication-Results; the caller validated them).
        ``rewrite=False``: the submission rewrite was done already (``cleanup.dkimsink``)."""
        writer = self.store.new_message()

        def header(queue_id: str) -> bytes:
            return prepend + received_header(
                session,
                envelope.recipients,
                queue_id,
                self.hostname,
                self._now(),
                smtputf8=envelope.smtputf8,
            )

        try:
            writer.write(header(writer.queue_id))
            fork = self._fork(envelope, header)  # alias expansion (a forwarded copy's spool)
        except BaseException:
            writer.abort()
            raise
        rewriter = self.rewriter(writer.queue_id) if rewrite and is_submission(session) else None
        return CleanupSink(
            self.store, writer, envelope, max_hops=self.max_hops, rewriter=rewriter, fork=fork
        )

    def begin_local(
        self, envelope: Envelope, *, submission: Submission | None = None
    ) -> CleanupSink:
        """For mail generated here, with no SMTP session (notices, local injection): the
        trace field is ``Received: by <hostname> (Kittiwake) id <qid>; <date>`` (RFC 5321
        §4.4 allows the from clause to be absent). Loops are counted, never refused: see
        ``CleanupSink.hops_exceeded``. A ``submission`` (``sendmail`` via pickup) is
        rewritten like submitted mail, and its uid named in the trace field."""
        writer = self.store.new_message()
        uid = submission.uid if submission is not None else None
        try:
            header = functools.partial(
                local_received_header, hostname=self.hostname, now=self._now(), uid=uid
            )
            writer.write(header(writer.queue_id))
            fork = self._fork(envelope, header)
        except BaseException:
            writer.abort()
            raise
        rewriter = None if submission is None else self.rewriter(writer.queue_id, submission)
        return CleanupSink(
            self.store,
            writer,
            envelope,
            max_hops=self.max_hops,
            refuse_loops=False,
            rewriter=rewriter,
            fork=fork,
        )

    def _fork(self, envelope: Envelope, header: Callable[[str], bytes]) -> Fork | None:
        if self.expander is None:
            return None
        return Fork(self.expander, self.store, envelope, header, self.on_forward)

    def rewriter(
        self, queue_id: str, submission: Submission | None = None
    ) -> HeaderRewriter | None:
        """The header rewriter for submitted mail (None: no rewriting configured)."""
        if self.rewrite is None:
            return None
        return HeaderRewriter(
            self.rewrite,
            queue_id=queue_id,
            hostname=self.hostname,
            now=self._now(),
            submission=submission,
        )

    def _now(self) -> datetime | None:
        return self._clock() if self._clock else None


def local_received_header(
    queue_id: str, hostname: str, now: datetime | None = None, *, uid: int | None = None
) -> bytes:
    """``Received: by <hostname> (Kittiwake) id <qid>; <date>``, folded, CRLF-ended; with
    ``uid`` the comment reads ``(Kittiwake, from userid <uid>)`` (as Postfix's pickup)."""
    host = _TOKEN_RE.sub("", hostname)[:255] or "localhost"
    comment = "Kittiwake" if uid is None else f"Kittiwake, from userid {int(uid)}"
    when = now if now is not None else datetime.now()
    if when.tzinfo is None:
        when = when.astimezone()
    return (
        f"Received: by {host} ({comment}) id {_TOKEN_RE.sub('', queue_id)};\r\n"
        f"\t{email.utils.format_datetime(when)}\r\n"
    ).encode()
