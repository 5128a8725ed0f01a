"""An example Kittiwake policy plugin (the one in the README, "Writing a plugin").

Refuses mail from listed sender domains at MAIL, and messages whose body contains a
listed word at DATA — reading the body as a stream, in chunks, never whole. Clean mail
gets an ``X-Example-Words: clean`` header and an ``x-words=pass`` result.
"""

from __future__ import annotations

from collections.abc import Mapping

from kittiwake.envelope import SessionInfo
from kittiwake.policy.message import MessageContext
from kittiwake.policy.results import CheckResult
from kittiwake.policy.verdict import CONTINUE, Verdict, add_header, reject

CHUNK = 64 * 1024


class WordFilter:
    def __init__(self, words: list[str], blocked_domains: list[str]) -> None:
        self.words = [w.lower().encode() for w in words]
        self.blocked = {d.lower() for d in blocked_domains}
        self.keep = max((len(w) for w in self.words), default=1) - 1

    async def mail(self, session: SessionInfo, sender: str) -> Verdict:
        if sender.rpartition("@")[2].lower() in self.blocked:
            return reject(550, "5.7.1", "Sender domain refused", reason="blocked domain")
        return CONTINUE

    async def data(self, ctx: MessageContext) -> Verdict:
        tail = b""
        with ctx.open_body() as body:
            while chunk := body.read(CHUNK):
                text = tail + chunk.lower()
                for word in self.words:
                    if word in text:
                        return reject(550, "5.7.1", "Message content refused", reason="word")
                tail = text[-self.keep :] if self.keep else b""
        spf = ctx.results.get("spf")  # what earlier checks found, if any ran
        note = f"clean (spf={spf.result})" if spf else "clean"
        return add_header("X-Example-Words", note, CheckResult("x-words", "pass"))


def _strings(options: Mapping[str, object], key: str) -> list[str]:
    value = options.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be an array of strings")
    return list(value)


def factory(options: Mapping[str, object]) -> WordFilter:
    """The entry point: ``options`` is the check's ``options`` table from the config."""
    unknown = set(options) - {"words", "blocked_domains"}
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return WordFilter(_strings(options, "words"), _strings(options, "blocked_domains"))
