"""The address directory: what an address of ours resolves to — mailboxes, aliases,
sub-addresses, catch-alls, SRS addresses — and whether it exists at all.

Owns ``Directory`` and its answer types ``Resolution`` and ``Target``. It is asked twice
for every recipient, with the same answer both times: by the RCPT check
(``policy.recipients``: ``check``, ``is_srs``, ``is_local_domain``) and at enqueue time by
``cleanup.expand`` (``resolve``, ``forward_sender``), which builds the recipients the queue
stores. Pure: no I/O except the optional ``mailbox_exists`` callable inside
``LocalMailboxes`` (the user store).

Resolution of one address, in order (Postfix's virtual_alias_maps order, then the mailbox):

1. an SRS address of ours (``SRS0=…``/``SRS1=…`` in ``srs.domain``, ``addressing.srs``)
   is validated and replaced by the address it stands for, which is resolved in turn;
   a bad hash or an old time stamp refuses it: ``550 5.1.1`` — the address names no
   mailbox (RFC 3463 §3.2 X.1.1), which is also what Postfix with postsrsd answers;
2. an address outside our domains is an EXTERNAL target (relayed);
3. the alias table: the full address, then — with a recipient delimiter — the address
   without its extension (``info+x@d`` → ``info@d``); each target is resolved again;
4. a mailbox (``LocalMailboxes.lookup``, which strips the extension itself): a MAILBOX
   target that keeps the address as written, so Delivered-To shows ``bob+tag@d``;
5. the domain's catch-all alias ``@d``, used only when nothing above matched;
6. else UNKNOWN. An address whose targets are all UNKNOWN is refused ``550 5.1.1``.

Loops: a target already on the expansion path (an alias listing itself, ``a → b → a``, a
catch-all pointing at a missing mailbox) is not expanded again: it is delivered to its own
mailbox if it has one, else it is UNKNOWN. Nesting deeper than ``max_depth`` refuses the
address with ``550 5.4.6`` (RFC 3463 §3.5 routing loop); more than ``max_targets`` targets,
``550 5.5.3`` (too many recipients). Duplicates are removed (case-blind).

An address literal naming one of our own IP addresses (``user@[192.0.2.1]``, RFC 5321
§4.1.3) is treated as the primary local domain; any other literal is somebody else's.

Security: HIGH — this decides which addresses exist (RCPT), where their mail goes, and
which SRS addresses may be relayed by anyone.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from kittiwake.addressing.srs import Srs, SrsError, srs_tag
from kittiwake.delivery.local import LocalMailboxes, normalize_domain
from kittiwake.envelope import Reply

MAX_DEPTH = 20  # nested aliases; Postfix's limit is 1000, but nobody nests 20 deep on purpose
MAX_TARGETS = 1000  # Postfix's virtual_alias_expansion_limit

NO_SUCH_USER = Reply(550, "5.1.1", "Recipient address rejected: no such user here")
TOO_DEEP = Reply(550, "5.4.6", "Recipient address rejected: alias loop or nesting too deep")
TOO_MANY = Reply(550, "5.5.3", "Recipient address rejected: alias expands to too many addresses")
SRS_REPLIES = {
    "expired": Reply(550, "5.1.1", "Recipient address rejected: SRS address expired"),
    "hash": Reply(550, "5.1.1", "Recipient address rejected: SRS address not valid"),
    "syntax": Reply(550, "5.1.1", "Recipient address rejected: SRS address malformed"),
}


class TargetKind(enum.Enum):
    MAILBOX = "mailbox"  # delivered here
    EXTERNAL = "external"  # outside our domains: relayed
    UNKNOWN = "unknown"  # in our domains, but nobody there


@dataclass(frozen=True, slots=True)
class Target:
    """One place an address resolves to. ``forwarded``: reached through an alias, a
    catch-all or an SRS address (not the address itself) — an EXTERNAL forwarded target
    is what needs an SRS sender."""

    address: str
    kind: TargetKind
    forwarded: bool = False


@dataclass(frozen=True, slots=True)
class Resolution:
    """The targets of one address; ``reply`` is the RCPT refusal (None: accepted)."""

    targets: tuple[Target, ...] = ()
    reply: Reply | None = None

    @property
    def accepted(self) -> bool:
        return self.reply is None


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _unquote(local: str) -> str:
    if len(local) >= 2 and local[0] == local[-1] == '"':
        out, chars = [], iter(local[1:-1])
        for c in chars:
            out.append(next(chars, "") if c == "\\" else c)
        return "".join(out)
    return local


def address_key(address: str) -> str:
    """The case-blind form used for alias keys, loop detection and duplicates."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().lower()
    return f"{_unquote(local).lower()}@{normalize_domain(domain)}"


def _literal_ip(domain: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of an address literal ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]``."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        ip = ipaddress.ip_address(inner)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Directory:
    """See the module docstring. ``aliases`` is ``Config.addressing.aliases`` (keys
    lower-cased ``local@domain`` or ``@domain``); ``own_addresses`` are the IP addresses
    we listen on (wildcards are ignored: they name no host)."""

    def __init__(
        self,
        mailboxes: LocalMailboxes,
        aliases: Mapping[str, Sequence[str]] = MappingProxyType({}),
        *,
        srs: Srs | None = None,
        own_addresses: Iterable[str] = (),
        max_depth: int = MAX_DEPTH,
        max_targets: int = MAX_TARGETS,
    ) -> None:
        self.mailboxes = mailboxes
        self._aliases = {address_key(k): tuple(v) for k, v in aliases.items()}  # "@d" too
        self.srs = srs
        self._own: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for text in own_addresses:
            ip = _literal_ip(f"[{text}]") or _literal_ip(f"[IPv6:{text}]")
            if ip is not None and not ip.is_unspecified:
                self._own.add(ip)
        self.max_depth = max_depth
        self.max_targets = max_targets

    # ------------------------------------------------------------------ domains

    def is_own_literal(self, domain: str) -> bool:
        ip = _literal_ip(domain.strip())
        return ip is not None and ip in self._own

    def is_local_domain(self, domain: str) -> bool:
        """A local or virtual domain, or an address literal of ours."""
        return self.mailboxes.is_local_domain(domain) or self.is_own_literal(domain)

    def canonical(self, address: str) -> str:
        """``user@[our IP]`` → ``user@<primary domain>``; anything else unchanged."""
        local, at, domain = address.rpartition("@")
        if at and self.is_own_literal(domain):
            return f"{local}@{self.mailboxes.primary}"
        return address

    def lookup(self, address: str) -> str | None:
        """The mailbox key of ``address`` (the ``Mailboxes`` protocol of the policy)."""
        return self.mailboxes.lookup(self.canonical(address))

    def is_srs(self, address: str) -> bool:
        """An SRS address in our SRS domain (by its form; ``check`` validates it)."""
        local, at, domain = address.rpartition("@")
        return (
            self.srs is not None
            and bool(at)
            and normalize_domain(domain) == self.srs.domain
            and srs_tag(_unquote(local)) is not None
        )

    # ------------------------------------------------------------------ resolution

    def check(self, address: str) -> Reply | None:
        """The RCPT refusal for ``address`` in one of our domains, or None: it exists."""
        return self.resolve(address).reply

    def resolve(self, address: str) -> Resolution:
        out: list[Target] = []
        try:
            self._expand(self.canonical(address.strip()), (), False, out, 0)
        except _Refused as refused:
            return Resolution((), refused.reply)
        unique: dict[str, Target] = {}
        for target in out:
            unique.setdefault(address_key(target.address), target)
        targets = tuple(unique.values())
        if all(t.kind is TargetKind.UNKNOWN for t in targets):
            return Resolution(targets, NO_SUCH_USER)
        return Resolution(targets)

    def forward_sender(self, sender: str) -> str:
        """The envelope sender for a copy forwarded outside: SRS-rewritten, except the
        null sender (never rewritten, RFC 5321 §4.5.5) and senders in our own domains
        (their SPF record already names us — postsrsd's ``domains`` exclusion)."""
        if self.srs is None or not sender:
            return sender
        domain = sender.rpartition("@")[2]
        if not domain or self.is_local_domain(domain):
            return sender
        return self.srs.forward(sender)

    def _expand(
        self, address: str, path: tuple[str, ...], forwarded: bool, out: list[Target], depth: int
    ) -> None:
        if depth > self.max_depth:
            raise _Refused(TOO_DEEP)
        if len(out) >= self.max_targets:
            raise _Refused(TOO_MANY)
        key = address_key(address)
        _, at, domain = address.rpartition("@")
        if not at:  # the bare <postmaster> (RFC 5321 §4.1.1.3)
            out.append(self._leaf(address, forwarded))
            return
        if self.is_srs(address):
            assert self.srs is not None
            try:
                original = self.srs.reverse(address)
            except SrsError as exc:
                raise _Refused(SRS_REPLIES.get(exc.reason, SRS_REPLIES["syntax"])) from None
            self._follow((self.canonical(original),), key, path, out, depth)
            return
        if not self.is_local_domain(domain):
            out.append(Target(address, TargetKind.EXTERNAL, forwarded))
            return
        targets = self._aliases.get(key)
        if targets is None:
            base = self.mailboxes.base_local(key.rpartition("@")[0])
            targets = self._aliases.get(f"{base}@{normalize_domain(domain)}")
        if targets is not None:
            self._follow(targets, key, path, out, depth)
        elif self.mailboxes.lookup(address) is not None:
            out.append(Target(address, TargetKind.MAILBOX, forwarded))
        elif (catchall := self._aliases.get("@" + normalize_domain(domain))) is not None:
            self._follow(catchall, key, path, out, depth)
        else:
            out.append(Target(address, TargetKind.UNKNOWN, forwarded))

    def _follow(
        self, targets: Iterable[str], key: str, path: tuple[str, ...], out: list[Target], depth: int
    ) -> None:
        inner = (*path, key)
        for target in targets:
            if address_key(target) in inner:  # a loop: the address as it is, no further
                out.append(self._leaf(target, True))
            else:
                self._expand(target, inner, True, out, depth + 1)

    def _leaf(self, address: str, forwarded: bool) -> Target:
        if self.lookup(address) is not None:
            return Target(address, TargetKind.MAILBOX, forwarded)
        domain = address.rpartition("@")[2]
        if "@" in address and not self.is_local_domain(domain):
            return Target(address, TargetKind.EXTERNAL, forwarded)
        return Target(address, TargetKind.UNKNOWN, forwarded)
