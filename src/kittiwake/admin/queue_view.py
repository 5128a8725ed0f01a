"""The queue as an administrator sees it: JSON values, a ``mailq`` listing, a qshape table.

Owns the JSON form of a queued message (what the control socket sends and
``kittiwake queue --json`` prints), ``summarize`` (live recipients per destination domain
in age buckets, like Postfix's qshape) and the text renderings. Pure functions: the same
code serves the running server's answers and the read-only view of a stopped one.
Not security sensitive, but every address and reply here came from outside: text output
replaces control characters so a crafted address cannot rewrite the operator's terminal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from kittiwake.delivery.api import QueuedMessage, RecipientStatus
from kittiwake.envelope import Notify, Recipient

Json = dict[str, Any]

LIVE = (RecipientStatus.PENDING.value, RecipientStatus.DEFERRED.value)
# qshape's buckets: ages in minutes, each twice the last; the final bucket is "older".
BUCKETS: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320, 640, 1280)


def message_json(message: QueuedMessage) -> Json:
    """A message as JSON: envelope, state and every recipient with its last outcome."""
    env = message.envelope
    recipients = []
    for r in message.recipients:
        given = env.recipients[r.index] if r.index < len(env.recipients) else None
        recipients.append(
            {
                "index": r.index,
                "address": r.address,
                "status": r.status.value,
                "attempts": r.attempts,
                "next_attempt": r.next_attempt,
                "last_attempt": r.last_attempt,
                "last_reply": r.last_reply,
                "route": r.route,
                "remote_mta": r.remote_mta,
                "dsn_status": r.dsn_status,
                "notify": None if given is None or given.notify is None else _notify(given),
                "orcpt": None if given is None else given.orcpt,
            }
        )
    return {
        "queue_id": message.queue_id,
        "sender": env.sender,
        "size": message.size,
        "received_at": message.received_at,
        "held": message.held,
        "hold_reason": message.hold_reason,
        "internal": env.internal,
        "envid": env.envid,
        "ret": None if env.ret is None else env.ret.value,
        "body_type": env.body_type.value,
        "smtputf8": env.smtputf8,
        "recipients": recipients,
    }


def _notify(recipient: Recipient) -> list[str]:
    notify = recipient.notify or Notify.NEVER
    return [str(flag.name) for flag in Notify if flag and flag in notify] or ["NEVER"]


def domain_of(address: str) -> str:
    _, at, domain = address.rpartition("@")
    return domain.lower() if at else "(local)"


def summarize(messages: Iterable[Json], now: float) -> Json:
    """Live recipients per destination domain, in qshape age buckets (minutes).

    ``buckets[i]`` counts recipients of messages younger than ``BUCKETS[i]`` minutes (and
    not younger than the one before); the last entry counts the older ones.
    """
    domains: dict[str, Json] = {}
    total = {"messages": 0, "recipients": 0, "held": 0, "deferred": 0}
    for m in messages:
        total["messages"] += 1
        total["held"] += bool(m["held"])
        age_minutes = max(0.0, now - float(m["received_at"])) / 60
        bucket = next((i for i, b in enumerate(BUCKETS) if age_minutes < b), len(BUCKETS))
        seen: set[str] = set()
        for r in m["recipients"]:
            if r["status"] not in LIVE:
                continue
            name = domain_of(r["address"])
            d = domains.setdefault(
                name,
                {
                    "domain": name,
                    "messages": 0,
                    "recipients": 0,
                    "deferred": 0,
                    "held": 0,
                    "oldest": float(m["received_at"]),
                    "buckets": [0] * (len(BUCKETS) + 1),
                },
            )
            if name not in seen:
                seen.add(name)
                d["messages"] += 1
                d["held"] += bool(m["held"])
            d["recipients"] += 1
            d["deferred"] += r["status"] == RecipientStatus.DEFERRED.value
            d["oldest"] = min(d["oldest"], float(m["received_at"]))
            d["buckets"][bucket] += 1
            total["recipients"] += 1
            total["deferred"] += r["status"] == RecipientStatus.DEFERRED.value
    ordered = sorted(domains.values(), key=lambda d: (-d["recipients"], d["domain"]))
    return {**total, "bucket_minutes": list(BUCKETS), "domains": ordered}


# ----------------------------------------------------------------------------- text


def clean(text: object) -> str:
    """One printable line: control characters (ESC, CR, LF, ...) become ``?``."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


_COL = 48  # where the sender/recipient column starts in the mailq listing


def mailq(messages: Sequence[Json]) -> list[str]:
    """Postfix ``mailq``-style lines: one block per message, ``!`` marks a held message."""
    if not messages:
        return ["Mail queue is empty"]
    lines = [f"{'-Queue ID-':<16}{'--Size--':>9} {'----Arrival Time----':<20}  -Sender/Recipient-"]
    octets = recipients = held = 0
    for m in messages:
        mark = "!" if m["held"] else " "
        sender = f"<{m['sender']}>"
        if m["internal"]:
            sender += f" [{m['internal']}]"
        lines.append(
            f"{clean(m['queue_id']) + mark:<16}{m['size']:>9} {_when(m['received_at']):<20}  "
            f"{clean(sender)}"
        )
        if m["held"]:
            lines.append(f"{'':{_COL}}(held: {clean(m['hold_reason'] or 'by the administrator')})")
        for r in m["recipients"]:
            lines.append(f"{'':{_COL}}{r['status']:<10} {clean(r['address'])}")
            detail = _attempts(r)
            if detail:
                lines.append(f"{'':{_COL + 11}}{clean(detail)}")
        octets += int(m["size"])
        recipients += len(m["recipients"])
        held += bool(m["held"])
    tail = f", {held} held" if held else ""
    n = len(messages)
    lines.append(
        f"-- {octets} octets in {n} message{'s' if n != 1 else ''}, "
        f"{recipients} recipient{'s' if recipients != 1 else ''}{tail}"
    )
    return lines


def _attempts(r: Json) -> str:
    parts = []
    if r["attempts"]:
        parts.append(f"{r['attempts']} attempt{'s' if r['attempts'] != 1 else ''}")
    if r["status"] == RecipientStatus.DEFERRED.value and r["next_attempt"]:
        parts.append(f"next {_when(r['next_attempt'])}")
    text = ", ".join(parts)
    if r["last_reply"]:
        text = f"({text}) {r['last_reply']}" if text else str(r["last_reply"])
    return text


def show(m: Json) -> list[str]:
    """Everything about one message, one field per line."""
    lines = [
        f"queue id     {clean(m['queue_id'])}",
        f"state        {'held: ' + clean(m['hold_reason'] or '') if m['held'] else 'active'}",
        f"arrival      {_when(m['received_at'])}",
        f"size         {m['size']} octets",
        f"sender       <{clean(m['sender'])}>",
    ]
    optional = {
        "internal": m["internal"],
        "envid": m["envid"],
        "ret": m["ret"],
        "body": m["body_type"] if m["body_type"] != "7BIT" else None,
        "smtputf8": "yes" if m["smtputf8"] else None,
    }
    lines += [f"{k:<12} {clean(v)}" for k, v in optional.items() if v]
    for r in m["recipients"]:
        lines.append(f"recipient    {clean(r['address'])}  {r['status']}")
        for key in ("route", "remote_mta", "dsn_status", "orcpt"):
            if r[key]:
                lines.append(f"  {key:<11}{clean(r[key])}")
        if r["notify"]:
            lines.append(f"  {'notify':<11}{','.join(r['notify'])}")
        detail = _attempts(r)
        if detail:
            lines.append(f"  {'last':<11}{clean(detail)}")
    return lines


def shape(summary: Json) -> list[str]:
    """The qshape table: per destination domain, live recipients by age (minutes)."""
    heads = [str(b) for b in summary["bucket_minutes"]] + [f"{summary['bucket_minutes'][-1]}+"]
    width = max([len("TOTAL"), *(len(clean(d["domain"])) for d in summary["domains"])])
    head = f"{'':<{width}} {'msgs':>6} {'rcpts':>6} {'defer':>6} {'held':>5} "
    lines = [head + " ".join(f"{h:>5}" for h in heads)]
    total_buckets = [0] * len(heads)
    for d in summary["domains"]:
        total_buckets = [a + b for a, b in zip(total_buckets, d["buckets"], strict=True)]
    rows = [
        (
            "TOTAL",
            summary["messages"],
            summary["recipients"],
            summary["deferred"],
            summary["held"],
            total_buckets,
        ),
        *(
            (
                clean(d["domain"]),
                d["messages"],
                d["recipients"],
                d["deferred"],
                d["held"],
                d["buckets"],
            )
            for d in summary["domains"]
        ),
    ]
    for name, msgs, rcpts, defer, held, buckets in rows:
        counts = " ".join(f"{c:>5}" for c in buckets)
        lines.append(f"{name:<{width}} {msgs:>6} {rcpts:>6} {defer:>6} {held:>5} {counts}")
    return lines
