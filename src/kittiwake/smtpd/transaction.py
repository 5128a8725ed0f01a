"""One mail transaction of an SMTP session: MAIL, RCPT, the body, and the commit before 250.

Owns ``MailTransaction``, the transaction half of ``smtpd.session.Session`` (a mixin: it
works on the session's state, declared below). MAIL and RCPT ask the policy chain
(RFC 5321 §3.3); ``_answer`` turns a verdict into the core's answer (HELO uses it too).
At DATA/BDAT the body streams into the cleanup sink, or — when the chain has ``data``
checks — into a ``DataStage`` that is checked at end of data and only then copied into
the queue. Nothing is acknowledged before it is durable (design practice 5):
the 250 (one per accepted recipient in LMTP, RFC 2033 §4.2) follows ``sink.commit``; a
refused or failed commit answers the refusal or 451 4.3.0 and drops the spool.

Moderately security sensitive: the envelope and body are the client's; every parsing
decision lives in ``proto``, every acceptance decision in ``policy``, the trace header and
the hop count in ``cleanup``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kittiwake.cleanup.writer import MessageRefused
from kittiwake.envelope import Envelope, Recipient, Reply, SessionInfo
from kittiwake.errors import KittiwakeError
from kittiwake.policy import Action, Verdict
from kittiwake.policy.results import Results
from kittiwake.proto import events as ev
from kittiwake.proto.server import ServerConnection
from kittiwake.smtpd.datastage import DataStage
from kittiwake.smtpd.intake import IntakeSink
from kittiwake.smtpd.settings import ListenerSettings

log = logging.getLogger("kittiwake.smtpd")

TEMP_STORE_FAILURE = Reply(451, "4.3.0", "Temporary failure storing the message, try again")
RECIPIENT_NOT_PLACED = Reply(554, "5.7.1", "Relay access denied")


class MailTransaction:
    """MAIL, RCPT, DATA/BDAT and the commit for ``Session``. See the module docstring."""

    settings: ListenerSettings
    conn: ServerConnection
    info: SessionInfo
    messages: int
    _closing: bool
    _sender: str
    _mail: ev.MailFrom | None
    _recipients: list[Recipient]
    _sink: IntakeSink | None
    _stage: DataStage | None
    _conn_results: Results
    _tx: Results

    def _send_bytes(self, data: bytes) -> None:
        raise NotImplementedError  # the session's

    def _answer(
        self,
        verdict: Verdict,
        *,
        default_accept: bool,
        accept: Callable[[], None] | None = None,
        fallback: Reply = RECIPIENT_NOT_PLACED,
    ) -> bool:
        """Turn a policy verdict into the core's answer; True when accepted."""
        action = verdict.action
        if action is Action.ACCEPT or (action is Action.CONTINUE and default_accept):
            (accept or self.conn.accept)()
            return True
        if action is Action.CONTINUE:
            self.conn.reject(fallback)
        elif action is Action.DISCONNECT:
            self._send_bytes(self.conn.close_with(verdict.reply or fallback))
            self._closing = True
        else:
            self.conn.reject(verdict.reply or fallback)
        return False

    async def _on_mail(self, event: ev.MailFrom) -> None:
        self._tx = self._conn_results.fork()
        verdict = await self.settings.policy.mail(self.info, event.sender, results=self._tx)
        if self._answer(verdict, default_accept=True):
            self._mail = event
            self._sender = event.sender
            self._recipients = []

    async def _on_rcpt(self, event: ev.RcptTo) -> None:
        verdict = await self.settings.policy.rcpt(
            self.info, self._sender, event.recipient, results=self._tx
        )
        if self._answer(verdict, default_accept=False):
            self._recipients.append(event.recipient)

    def _envelope(self) -> Envelope:
        mail = self._mail
        assert mail is not None
        return Envelope(
            sender=mail.sender,
            recipients=tuple(self._recipients),
            body_type=mail.body_type,
            smtputf8=mail.smtputf8,
            declared_size=mail.size,
            ret=mail.ret,
            envid=mail.envid,
            # RFC 4954 §5: the AUTH= we keep (and pass on) depends on who authenticated
            auth=self.settings.authenticator.submitter(self.info.auth_user, mail.auth, mail.sender),
        )

    def _on_data_start(self) -> None:
        if self.settings.policy.has("data"):  # the queue's spool opens after the checks
            self._stage = DataStage(self.settings.spool_dir)
            self.conn.accept()
            return
        try:
            self._sink = self.settings.intake.begin(self.info, self._envelope())
        except (OSError, KittiwakeError):
            log.exception("cannot open a spool file")
            self.conn.reject(TEMP_STORE_FAILURE)
            return
        self.conn.accept()

    async def _checked_sink(self, stage: DataStage) -> IntakeSink | None:
        """Run the DATA checks; the queue's sink for an accepted message, else None
        (the reply is given)."""
        try:
            verdict = await stage.check(self.settings.policy, self.info, self._envelope(), self._tx)
            if verdict.action in (Action.REJECT, Action.TEMPFAIL, Action.DISCONNECT):
                reply = verdict.reply or TEMP_STORE_FAILURE
                log.info("message from %s refused by policy: %s", self.info.client_ip, reply)
                if verdict.action is Action.DISCONNECT:
                    self._send_bytes(self.conn.close_with(reply))
                    self._closing = True
                else:
                    self.conn.reject(reply)
                return None
            sink = self.settings.intake.begin(self.info, self._envelope(), prepend=stage.prepend())
        except (OSError, KittiwakeError, ValueError):
            log.exception("cannot queue the message from %s", self.info.client_ip)
            self.conn.reject(TEMP_STORE_FAILURE)
            return None
        try:
            stage.replay(sink, self.settings.proto.hostname)
        except (OSError, KittiwakeError):
            log.exception("cannot copy the message from %s", self.info.client_ip)
            sink.abort()
            self.conn.reject(TEMP_STORE_FAILURE)
            return None
        return sink

    async def _on_body_end(self, event: ev.BodyEnd) -> None:
        sink, self._sink = self._sink, None
        stage, self._stage = self._stage, None
        if stage is not None:
            try:
                if event.failure is None:
                    sink = await self._checked_sink(stage)
                    if sink is None:
                        self._reset_transaction()
                        return
            finally:
                stage.close()
        if event.failure is not None or sink is None:
            if sink is not None:
                sink.abort()
            if event.failure is None:
                self.conn.reject(TEMP_STORE_FAILURE)
            else:
                log.info("message from %s refused: %s", self.info.client_ip, event.failure)
            self._reset_transaction()
            return
        try:
            notice = await sink.commit(self._envelope())
        except MessageRefused as exc:  # e.g. too many hops: the sending MTA bounces it
            sink.abort()
            log.info(
                "%s: message from %s refused: %s", sink.queue_id, self.info.client_ip, exc.reply
            )
            self.conn.reject(exc.reply)
            self._reset_transaction()
            return
        except (OSError, KittiwakeError):
            log.exception("commit failed for %s", sink.queue_id)
            sink.abort()
            self.conn.reject(TEMP_STORE_FAILURE)
            self._reset_transaction()
            return
        self.messages += 1
        log.info(
            "%s: client=[%s], from=<%s>, size=%d, nrcpt=%d (queued) %s",
            sink.queue_id,
            self.info.client_ip,
            self._sender,
            event.size,
            len(self._recipients),
            self._tx.summary(),
        )
        queued = Reply(250, "2.0.0", f"Ok: queued as {sink.queue_id}")
        if self.settings.proto.lmtp:  # RFC 2033 §4.2: one reply per accepted recipient
            self.conn.accept_lmtp([queued] * len(self._recipients))
        else:
            self.conn.accept(queued)
        self._reset_transaction()
        self.settings.on_queued(notice)

    def _reset_transaction(self) -> None:
        self._mail = None
        self._sender = ""
        self._recipients = []

    def _abort_transaction(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        if self._stage is not None:
            self._stage.close()
            self._stage = None
        self._reset_transaction()
