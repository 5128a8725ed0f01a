"""The classic ``sendmail`` command line, parsed the way cron, PHP's mail() and mutt use it.

Owns ``parse_args`` (→ ``Options``), ``UsageError``, the sysexits codes and the address
helpers ``parse_recipients``/``parse_sender``/``qualify`` (``AddressError``).

The grammar is Postfix's sendmail(1) (POSIX getopt with ``+``): single-letter options, a
cluster like ``-ti`` is ``-t -i``, an option's argument is attached (``-fuser``, ``-oi``,
``-odb``) or the next word (``-f user``), and options end at the first argument that is no
option or at ``--``: ``sendmail -t -- -odd@x`` has the recipient ``-odd@x``. Options of
other mailers that change nothing here (``-oem``, ``-odb``, ``-B8BITMIME``, ``-X file``,
``-L label``, ``-h hops``...) are accepted and ignored; a letter we do not know is a usage
error (EX_USAGE). Long options of ours: ``--config FILE`` (also ``-C FILE``), ``--help``,
``--version``. Security: the arguments may come from a web form through PHP's mail(),
so none of them names a file we write (``-X`` is ignored; see CVE-2016-10033).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from pathlib import Path

from kittiwake.cleanup.maildrop import NOTIFY_WORDS, RET_WORDS, valid_mailbox

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78

_WITH_ARG = frozenset("ABCFLNORVXbefhopqr")  # Postfix's getopt string, less what we refuse
_IGNORED_FLAGS = frozenset("GUcmnx")
MODES = {"m": "deliver", "s": "smtp"}  # -bm (default), -bs


class UsageError(Exception):
    """Bad command line: EX_USAGE."""


class AddressError(Exception):
    """An address that does not parse: EX_NOUSER for recipients."""


@dataclass
class Options:
    recipients: list[str] = field(default_factory=list)
    extract: bool = False  # -t
    sender: str | None = None  # -f / -r
    full_name: str | None = None  # -F
    ignore_dots: bool = False  # -i / -oi
    mode: str = "m"  # -b<mode>
    verbose: bool = False  # -v
    config: Path | None = None  # -C / --config
    notify: tuple[str, ...] | None = None  # -N
    ret: str | None = None  # -R
    envid: str | None = None  # -V
    help: bool = False
    version: bool = False


def parse_args(argv: list[str]) -> Options:
    """``argv`` without the program name → ``Options``; ``UsageError`` when it is wrong."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            i = _long_option(opts, arg, argv, i)
            continue
        if not arg.startswith("-") or arg == "-":
            i -= 1  # the first recipient: options end here
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            j += 1
            if letter in _WITH_ARG:
                value = arg[j:]
                if not value:
                    if i >= len(argv):
                        raise UsageError(f"option -{letter} needs an argument")
                    value = argv[i]
                    i += 1
                _option(opts, letter, value)
                break
            _flag(opts, letter)
    opts.recipients = argv[i:]
    return opts


def _long_option(opts: Options, arg: str, argv: list[str], i: int) -> int:
    name, eq, value = arg.partition("=")
    if name == "--config":
        if not eq:
            if i >= len(argv):
                raise UsageError("--config needs a file")
            value = argv[i]
            i += 1
        opts.config = Path(value)
    elif name == "--help" and not eq:
        opts.help = True
    elif name == "--version" and not eq:
        opts.version = True
    else:
        raise UsageError(f"unknown option {name}")
    return i


def _flag(opts: Options, letter: str) -> None:
    if letter == "t":
        opts.extract = True
    elif letter == "i":
        opts.ignore_dots = True
    elif letter == "v":
        opts.verbose = True
    elif letter == "I":
        raise UsageError("-I (newaliases) is not supported")
    elif letter not in _IGNORED_FLAGS:
        raise UsageError(f"unknown option -{letter}")


def _option(opts: Options, letter: str, value: str) -> None:
    if letter in "fr":
        opts.sender = value
    elif letter == "F":
        opts.full_name = value
    elif letter == "C":
        opts.config = Path(value)
    elif letter == "o":
        if value[:1] == "i":  # -oi: a lone "." does not end the message
            opts.ignore_dots = True
    elif letter == "b":
        if value not in MODES:
            raise UsageError(f"-b{value} is not supported (only -bm and -bs)")
        opts.mode = value
    elif letter == "q":
        raise UsageError("-q is not supported; use: kittiwake queue flush")
    elif letter == "N":
        opts.notify = parse_notify(value)
    elif letter == "R":
        if value.lower() not in RET_WORDS:
            raise UsageError(f"-R must be full or hdrs, not {value!r}")
        opts.ret = value.lower()
    elif letter == "V":
        if not value or len(value) > 100 or not all("!" <= c <= "~" for c in value):
            raise UsageError("-V: an envelope id is 1 to 100 printable ASCII characters")
        opts.envid = value
    # A, B, L, O, X, e, h, p: accepted and ignored


def parse_notify(value: str) -> tuple[str, ...]:
    """``-N never`` or a comma list of success, failure, delay (RFC 3461 §4.1)."""
    words = tuple(dict.fromkeys(w.strip().lower() for w in value.split(",")))
    if not words or any(w not in NOTIFY_WORDS for w in words):
        raise UsageError(f"-N: never, or a list of success, failure, delay; not {value!r}")
    if "never" in words and len(words) > 1:
        raise UsageError("-N: never cannot be combined with other values")
    return words


# ------------------------------------------------------------------------------ addresses


def qualify(address: str, domain: str) -> str:
    """``alice`` → ``alice@domain``; a qualified address is returned unchanged."""
    return address if "@" in address else f"{address}@{domain}"


def _checked(address: str, domain: str) -> str:
    full = qualify(address.strip(), domain)
    if not valid_mailbox(full):
        raise AddressError(f"bad address syntax: {address!r}")
    return full


def parse_recipients(values: list[str], domain: str) -> list[str]:
    """Addresses from arguments or header values: plain addresses, ``Name <addr>``,
    comma-separated lists (``email.utils.getaddresses``); unqualified names get
    ``@domain``; duplicates are dropped. A value without ``<``, ``(`` or quotes must be a
    plain list (``"alice bob"`` is an error, not ``alice``)."""
    found: list[str] = []
    for value in values:
        if not any(c in value for c in '<("'):
            pieces = [p.strip() for p in value.split(",")]
            found += [_checked(p, domain) for p in pieces if p]
            continue
        pairs = email.utils.getaddresses([value])
        addresses = [addr for _, addr in pairs if addr]
        if not addresses and value.strip():
            raise AddressError(f"bad address syntax: {value!r}")
        found += [_checked(a, domain) for a in addresses]
    return list(dict.fromkeys(found))


def parse_sender(value: str, domain: str) -> str:
    """``-f`` value: an address, ``<address>``, or ``<>``/empty (the null reverse-path)."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        return ""
    try:
        return _checked(text, domain)
    except AddressError:
        raise UsageError(f"-f: bad sender address {value!r}") from None
