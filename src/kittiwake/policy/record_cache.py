"""``CachedParser``: a bounded memo for parsers of DNS-published policy records.

Owns the one pattern SPF (``spf_record``) and DMARC (``dmarc``) share: the same TXT text
arrives with every message from a sender, so its parse is kept, by exact text, in an
LRU of fixed size. A parse error is kept as its message and raised as a fresh exception
each time (an exception object must not be shared between callers). Texts longer than
``max_text`` are parsed and never kept, so records an attacker publishes cannot hold
much memory. Results must be immutable (they are shared).
Security: LOW (bounded memory; the parse itself is the caller's).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["CachedParser"]

T = TypeVar("T")


class CachedParser(Generic[T]):
    """``parser(text)`` parses through the memo; ``parser.cached`` is the lru_cache'd
    ``text → result or error message`` (its ``cache_info()`` shows the bound)."""

    def __init__(
        self,
        parse: Callable[[str], T],
        error: Callable[[str], Exception],
        *,
        size: int,
        max_text: int,
        caught: type[Exception] = ValueError,
    ) -> None:
        self._parse = parse
        self._error = error
        self._caught = caught
        self.max_text = max_text
        self.cached = functools.lru_cache(maxsize=size)(self._outcome)

    def _outcome(self, text: str) -> T | str:
        try:
            return self._parse(text)
        except self._caught as exc:
            return str(exc)

    def __call__(self, text: str) -> T:
        if len(text) > self.max_text:
            return self._parse(text)
        outcome = self.cached(text)
        if isinstance(outcome, str):
            raise self._error(outcome)
        return outcome
