"""What the policy benchmark (bench/policy.py) sets up: DNS zone, DKIM keys, messages, targets.

Owns: the zone the TestDNS serves (SPF, DMARC p=reject and DKIM keys for the sender domain;
an empty DNSBL zone), the DKIM-signed message files sent with ``smtp-source -F``, the
Kittiwake target with and without the issue-5 checks (both on that TestDNS, neither
trusting loopback), reading the Authentication-Results field of delivered mail, and
sorting the TestDNS query log into expected and unexpected names.

Not security-sensitive (benchmark tooling); the test keys are throwaway and live in the
work directory. Nothing here may make a server query the machine's resolver: both targets
get ``[dns] nameservers`` = the TestDNS.
"""

from __future__ import annotations

import email.utils
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import SENDER, body_chunk
from bench.targets import DOMAIN, KittiwakeTarget
from kittiwake.policy.dkim_sign import generate_key, public_record, sign, txt_record
from tests.support.dns import Query, TestDNS

SENDER_DOMAIN = SENDER.rpartition("@")[2]  # client.bench.test: HELO, MAIL FROM and From:
DNSBL_ZONE = "dnsbl.bench.test"
TTL = 3600  # an ordinary TTL: the resolver's cache works as it would for a real sender
SELECTORS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}

# The checks of issue 5, in the order of README "Sender authentication and anti-spam".
CHECKS = ("dnsbl", "spf", "dkim", "arc", "dmarc", "authres", "recipients")


def make_keys(workdir: Path) -> dict[str, bytes]:
    """selector -> private key PEM (rsa-2048 and ed25519), written under ``workdir``."""
    keys = {"rsa": generate_key("rsa", 2048), "ed25519": generate_key("ed25519")}
    for selector, pem in keys.items():
        (workdir / f"{selector}.key").write_bytes(pem)
    return keys


def zone_text(keys: dict[str, bytes], ttl: int = TTL) -> str:
    """SPF and DMARC for the sender domain, a DKIM record per key; the DNSBL zone is empty
    (every query under it is NXDOMAIN: nothing is listed)."""
    lines = [
        f'{SENDER_DOMAIN}. {ttl} IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
        f'_dmarc.{SENDER_DOMAIN}. {ttl} IN TXT "v=DMARC1; p=reject"',
    ]
    for selector, pem in keys.items():
        record = txt_record(SENDER_DOMAIN, selector, public_record(pem))
        name, _, rest = record.partition(" ")
        lines.append(f"{name} {ttl} {rest}")
    return "\n".join(lines) + "\n"


def expected_names(keys: Iterable[str]) -> set[str]:
    """Every name the checks have a reason to ask the TestDNS about."""
    names = {f"{SENDER_DOMAIN}.", f"_dmarc.{SENDER_DOMAIN}.", f"1.0.0.127.{DNSBL_ZONE}."}
    return names | {f"{s}._domainkey.{SENDER_DOMAIN}." for s in keys}


def query_counts(queries: Sequence[Query], expected: set[str]) -> tuple[Counter[str], list[str]]:
    """("NAME TYPE/proto" -> count, and the unexpected names)."""
    counts = Counter(f"{q.name} {q.qtype}/{q.protocol}" for q in queries)
    return counts, sorted({q.name for q in queries} - expected)


def write_signed(path: Path, body_size: int, selector: str, pem: bytes) -> Path:
    """A message from ``SENDER`` of about ``body_size`` body octets, DKIM-signed by
    ``SENDER_DOMAIN`` with ``selector``; LF line ends (smtp-source -F adds the CRLF)."""
    head = (
        f"From: Bench <{SENDER}>\n"
        f"To: <rcpt@{DOMAIN}>\n"
        f"Subject: policy bench, {body_size} octets signed with {selector}\n"
        f"Date: {email.utils.formatdate(localtime=False)}\n"
        f"Message-ID: <policy-{selector}-{body_size}@{SENDER_DOMAIN}>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
    )
    body = body_chunk(max(body_size, 128)).replace(b"\r\n", b"\n")
    message = head.encode() + b"\n" + body
    signature = sign(
        message,
        domain=SENDER_DOMAIN,
        selector=selector,
        private_key_pem=pem,
        algorithm=SELECTORS[selector],
        linesep=b"\n",
    )
    path.write_bytes(signature + message)
    return path


class PolicyKittiwakeTarget(KittiwakeTarget):
    """Kittiwake with ``[dns]`` on the TestDNS, ``relay.mynetworks = []`` (loopback clients
    are checked like any other) and, if ``checks``, the issue-5 chain."""

    def __init__(
        self,
        workdir: Path,
        listen: str,
        dns: TestDNS,
        *,
        checks: bool,
        command: Sequence[str] = (),
    ) -> None:
        self.name = "checks-on" if checks else "checks-off"
        super().__init__(workdir, listen, command)
        self.dns = dns
        self.checks = checks

    def config_text(self) -> str:
        text = super().config_text()
        text += "[relay]\nmynetworks = []\n"
        text += f'[dns]\nnameservers = ["{self.dns.address}"]\nport = {self.dns.port}\n'
        text += "timeout = 5\n"
        if not self.checks:
            return text
        for name in CHECKS:
            text += f'[[policy.checks]]\nname = "{name}"\n'
            if name == "dnsbl":
                text += f'options = {{ zones = ["{DNSBL_ZONE}"] }}\n'
        return text


@dataclass
class HeaderSample:
    files: int = 0  # files read
    good: int = 0  # with an A-R field saying everything expected
    fields: list[str] = field(default_factory=list)  # the A-R values seen
    problems: list[str] = field(default_factory=list)


def _auth_results(path: Path) -> list[str]:
    """The Authentication-Results values in the header section (unfolded)."""
    with open(path, "rb") as f:
        head = f.read(256 * 1024).split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    text = head.decode("latin-1").replace("\r\n", "\n").replace("\n\t", " ").replace("\n ", " ")
    return [
        line.split(":", 1)[1].strip()
        for line in text.split("\n")
        if line.lower().startswith("authentication-results:")
    ]


def _has(value: str, result: str) -> bool:
    """``spf=pass`` as a whole result in an A-R value (not ``spf=passive``, RFC 8601 §2.2)."""
    return re.search(rf"(^|[\s;]){re.escape(result)}($|[\s;])", value) is not None


def sample_headers(maildir: Path, want: Sequence[str], count: int = 3) -> HeaderSample:
    """Read ``count`` delivered files (first, middle, last): each must carry exactly one
    A-R field containing every ``want`` (e.g. ``dkim=pass``); ``want == ()``: none at all."""
    files = sorted((maildir / "new").glob("*"))
    picks = sorted({0, len(files) // 2, len(files) - 1})[:count] if files else []
    out = HeaderSample()
    for i in picks:
        values = _auth_results(files[i])
        out.files += 1
        out.fields.extend(values[:1])
        if (not values) if not want else len(values) == 1 and all(_has(values[0], w) for w in want):
            out.good += 1
        else:
            out.problems.append(f"{files[i].name}: {values or 'no Authentication-Results'}")
    if not files:
        out.problems.append(f"no files in {maildir}/new")
    return out
