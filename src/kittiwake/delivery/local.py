"""Local mailboxes: which addresses exist here, and where each one's Maildir lives.

Owns ``LocalMailboxes``. Security sensitive: ``lookup`` decides which recipients are
accepted for local delivery (policy asks it at RCPT time), and ``path_for`` turns
attacker-chosen local parts into directory names — it must never escape ``root``.

Rules, in order, for ``lookup(address)``:
- the bare ``postmaster`` (RFC 5321 §4.1.1.3) and ``postmaster@<any local or virtual
  domain>`` in any case (RFC 5321 §4.5.1) resolve to the configured postmaster mailbox;
- a domain that is neither local nor virtual (compared case-insensitively, trailing dot
  ignored) → None;
- in a local domain, with no ``users`` and no ``mailbox_exists`` source, every local part
  exists (a catch-all, for trying things out);
- else a user entry ``alice@example.org`` exists in that domain only, and a bare ``alice``
  exists in every local domain as ONE mailbox, keyed at the first (primary) domain — the
  way Postfix maps all of ``mydestination`` onto the same local users;
- a virtual domain (Postfix's virtual mailbox domains) has exactly the ``virtual_mailboxes``
  listed for it (full addresses), never a catch-all;
- in both kinds, ``mailbox_exists(local@domain)`` (the user store, lower-cased address)
  may add mailboxes;
- sub-addressing: with a ``recipient_delimiter`` (e.g. ``+``) a local part that is not a
  mailbox as written is tried again without its extension — from the first delimiter
  character on — so ``bob+news@x`` is ``bob@x``'s mailbox (Postfix's recipient_delimiter;
  several characters mean any of them). The caller keeps the full address (Delivered-To).
Local parts are matched case-insensitively (RFC 5321 §2.4 allows case-sensitive local parts,
but no sane mail system uses that). The mailbox key is ``local@domain``: the domain in lower
case, the local part as configured (catch-all: lower-cased, so Bob and bob share a mailbox).
A quoted local part is unquoted first (``"bob"@x`` is ``bob@x``).

``path_for(key)`` is ``root/<domain>/<local>``, each part escaped reversibly: every octet
outside ``[A-Za-z0-9._+=-]`` (so ``/``, ``\\``, ``%``, NUL, non-ASCII UTF-8...), and a
leading dot, becomes ``%XX`` — no ``..``, no hidden names, no separators survive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kittiwake.errors import ConfigError

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=-")
_MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1, octets
_NAME_MAX = 255  # a path component on every filesystem we care about


def escape_component(text: str) -> str:
    """A reversible, safe file name for ``text`` (see the module docstring)."""
    if not text:
        raise ValueError("empty mailbox path component")
    out = []
    for i, byte in enumerate(text.encode("utf-8", "surrogateescape")):
        if byte in _SAFE and not (i == 0 and byte == 0x2E):  # no leading dot
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    name = "".join(out)
    if len(name) > _NAME_MAX:
        raise ValueError("mailbox path component too long")
    return name


def unescape_component(name: str) -> str:
    """Inverse of ``escape_component``."""
    raw = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "%":
            raw.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(name[i]))
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def normalize_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _unquote(local: str) -> str:
    """RFC 5321 §4.1.2 Quoted-string → its content (quoted-pairs resolved)."""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        out = []
        chars = iter(local[1:-1])
        for c in chars:
            out.append(next(chars, "") if c == "\\" else c)
        return "".join(out)
    return local


class LocalMailboxes:
    """The mailbox table (see the module docstring). ``virtual_domains``,
    ``virtual_mailboxes``, ``recipient_delimiter`` and ``mailbox_exists`` are issue 4's
    additions; without them the 0.1 behaviour is unchanged."""

    def __init__(
        self,
        root: Path,
        domains: Sequence[str],
        users: Sequence[str],
        postmaster: str,
        *,
        virtual_domains: Sequence[str] = (),
        virtual_mailboxes: Sequence[str] = (),
        recipient_delimiter: str = "",
        mailbox_exists: Callable[[str], bool] | None = None,
        has_users: Callable[[], bool] | None = None,
    ) -> None:
        self.root = Path(root)
        self.domains = tuple(dict.fromkeys(normalize_domain(d) for d in domains if d.strip()))
        if not self.domains:
            raise ConfigError("local.domains", "at least one local domain is needed")
        self.primary = self.domains[0]
        self._domain_set = frozenset(self.domains)
        self.virtual_domains = tuple(
            dict.fromkeys(normalize_domain(d) for d in virtual_domains if d.strip())
        )
        self._virtual_set = frozenset(self.virtual_domains) - self._domain_set
        self.delimiter = recipient_delimiter
        self._exists = mailbox_exists
        self._has_users = has_users  # the user store is not empty: no catch-all any more
        self._users: dict[tuple[str, str], str] = {}  # (local lower, domain) → key
        self._bare: dict[str, str] = {}  # local lower → key at the primary domain
        for entry in users:
            local, at, domain = entry.strip().rpartition("@")
            if not at:
                local = entry.strip()
                self._bare[local.lower()] = f"{local}@{self.primary}"
                continue
            domain = normalize_domain(domain)
            if domain not in self._domain_set or not local:
                raise ConfigError("local.users", f"{entry!r} is not in a local domain")
            self._users[(local.lower(), domain)] = f"{local}@{domain}"
        # The 0.1 catch-all: nothing says which local parts exist, so all of them do — until
        # a mailbox source that is not empty says otherwise (a user store with users in it).
        self._open_config = not self._users and not self._bare
        self._open_static = self._open_config and mailbox_exists is None and has_users is None
        for entry in virtual_mailboxes:
            local, at, domain = entry.strip().rpartition("@")
            domain = normalize_domain(domain)
            if not at or not local or domain not in self._virtual_set:
                raise ConfigError("virtual.mailboxes", f"{entry!r} is not in a virtual domain")
            self._users[(local.lower(), domain)] = f"{local}@{domain}"
        local, at, domain = postmaster.strip().rpartition("@")
        if not at:
            local, domain = postmaster.strip(), self.primary
        domain = normalize_domain(domain)
        if not local or domain not in self._domain_set:
            raise ConfigError("local.postmaster", f"{postmaster!r} is not a local mailbox")
        self.postmaster = f"{local}@{domain}"

    def is_local_domain(self, domain: str) -> bool:
        """True for a domain delivered here: ``local.domains`` or a virtual domain."""
        name = normalize_domain(domain)
        return name in self._domain_set or name in self._virtual_set

    def is_virtual_domain(self, domain: str) -> bool:
        return normalize_domain(domain) in self._virtual_set

    def base_local(self, local: str) -> str:
        """``local`` without its sub-address extension (``bob+news`` → ``bob``); as is when
        there is no delimiter in it or nothing would be left."""
        if not self.delimiter:
            return local
        cut = min((i for i in (local.find(c) for c in self.delimiter) if i >= 0), default=-1)
        return local[:cut] if cut > 0 else local

    def lookup(self, address: str) -> str | None:
        """The mailbox key for ``address``, or None when no such mailbox exists here."""
        local, at, domain = address.strip().rpartition("@")
        if not at:  # <postmaster> with no domain is the only bare name we accept
            return self.postmaster if address.strip().lower() == "postmaster" else None
        domain = normalize_domain(domain)
        virtual = domain in self._virtual_set
        if not virtual and domain not in self._domain_set:
            return None
        local = _unquote(local)
        if not local or len(local.encode("utf-8", "surrogateescape")) > _MAX_LOCAL:
            return None
        folded = local.lower()
        base = self.base_local(folded)
        if self._is_open() and not virtual:
            return self.postmaster if base == "postmaster" else f"{base}@{domain}"
        return self._find(folded, domain, virtual) or (
            self._find(base, domain, virtual) if base != folded else None
        )

    def _is_open(self) -> bool:
        if self._open_static:
            return True
        return self._open_config and self._has_users is not None and not self._has_users()

    def _find(self, folded: str, domain: str, virtual: bool) -> str | None:
        if folded == "postmaster":
            return self.postmaster
        key = self._users.get((folded, domain)) or (None if virtual else self._bare.get(folded))
        if key is None and self._exists is not None and self._exists(f"{folded}@{domain}"):
            key = f"{folded}@{domain}"
        return key

    def path_for(self, mailbox: str) -> Path:
        """The Maildir directory of a mailbox key (from ``lookup``); never outside ``root``."""
        local, at, domain = mailbox.rpartition("@")
        if not at or not local:
            raise ValueError(f"not a mailbox key: {mailbox!r}")
        return self.root / escape_component(normalize_domain(domain)) / escape_component(local)
