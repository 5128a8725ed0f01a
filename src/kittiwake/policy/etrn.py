"""ETRN (RFC 1985): who may start a queue run, for which node, and the reply to give.

Owns ``handle_etrn`` — the whole server side of ETRN except the I/O: the smtpd session calls
it for a ``proto.Etrn`` decision with the client's address, the ``etrn.allowed`` networks
and a ``flush`` callable (the scheduler's), and answers the core with the returned reply
(``accept`` for 25x, ``reject`` for 45x).

Security: MEDIUM. ETRN makes us open connections sooner, never to new places (RFC 1985
§8): mail goes to the destinations it was going to anyway. Still, only clients in
``etrn.allowed`` may use it, and ``@tld`` (a single label, "release all of .com", §8) is
refused. Replies echo the node, which the core's grammar has limited to LDH characters.

Reply codes, RFC 1985 §5.1 (its §5.2 says a 4xx usually means "not from you"):
  253 2.0.0  OK, <n> pending messages for node <x> started
  251 2.0.0  OK, no messages waiting for node <x>
  458 4.3.0  Unable to queue messages for node <x>       (the flush failed)
  459 4.7.1  Node <x> not allowed: <reason>             (client not allowed, #queue, @tld)
(250 and 252 say less than 253/251, which §5.1 prefers when the count is known. For
``@domain`` the count adds two flushes, so a message with recipients both in the domain and
in a subdomain counts twice.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kittiwake.envelope import Reply
from kittiwake.policy.networks import Networks

log = logging.getLogger("kittiwake.policy")

Flush = Callable[[str | None], Awaitable[int]]


async def handle_etrn(argument: str, client_ip: str, allowed: Networks, flush: Flush) -> Reply:
    """The reply to ``ETRN argument`` from ``client_ip`` (see the module docstring).

    ``flush(domain)`` is ``Scheduler.flush``: it makes the deferred mail for recipient
    domain ``domain`` due now (``".example.org"``: every subdomain of it) and returns how
    many messages it scheduled. ``ETRN example.org`` flushes that domain; ``ETRN
    @example.org`` (RFC 1985 §5.3) flushes ``example.org`` and ``.example.org``. It is
    awaited, so it must only *start* the run (§5.1: "this command should return
    immediately").
    """
    option = argument[:1] if argument[:1] in ("@", "#") else ""
    node = argument[len(option) :].lower().rstrip(".")
    shown = f"{option}{node}"
    if client_ip not in allowed:
        log.info("ETRN %s from %s refused: not in etrn.allowed", shown, client_ip)
        return Reply(459, "4.7.1", f"Node {shown} not allowed: client not authorized")
    if option == "#":  # we keep no named queues (§5.3 leaves them to the server)
        return Reply(459, "4.7.1", f"Node {shown} not allowed: no such queue")
    if not node or (option == "@" and "." not in node):
        return Reply(459, "4.7.1", f"Node {shown} not allowed: too broad")  # RFC 1985 §8
    try:
        count = await flush(node)
        if option == "@":
            count += await flush("." + node)
    except Exception:  # the queue is unwell: tell the client to try later
        log.exception("ETRN %s from %s: flush failed", shown, client_ip)
        return Reply(458, "4.3.0", f"Unable to queue messages for node {shown}")
    log.info("ETRN %s from %s: %d messages started", shown, client_ip, count)
    if count == 0:
        return Reply(251, "2.0.0", f"OK, no messages waiting for node {shown}")
    return Reply(253, "2.0.0", f"OK, {count} pending messages for node {shown} started")
