"""Memory: signing and verifying a ~50 MB message grows RSS by a few MB, not by the message.

Run in a fresh interpreter (``ru_maxrss`` is a high-water mark): a warm-up on a small
message first, so imports and first-use allocations are in the baseline; then the big
message is signed (our ``sign``, from a file), written with its field, and verified
(ours, from a file), and ARC-sealed and ARC-verified the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    r"""
    import asyncio, json, resource, shutil, sys
    from kittiwake.net.dns import Status, TxtResult
    from kittiwake.policy.arc import seal, verify_chain
    from kittiwake.policy.authres import build_header
    from kittiwake.policy.dkim import verify
    from kittiwake.policy.dkim_sign import generate_key, load_private_key, public_record, sign

    class Resolver:  # answers every key name with our one key
        def __init__(self, record): self.record = record
        async def txt(self, name): return TxtResult(Status.OK, (self.record,))

    def rss_kib(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    work = sys.argv[1]
    pem = generate_key("rsa", 2048)
    resolver = Resolver(public_record(pem))
    head = b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: big\r\n\r\n"
    line = b"0123456789 abcdef  ghijklmnop\tqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456\r\n"
    ar = build_header("mx.a.test", [("spf", "pass", "", {"smtp.mailfrom": "a@a.test"})])

    def run(path, lines):
        with open(path, "wb") as f:
            f.write(head)
            for _ in range(lines // 1000):
                f.write(line * 1000)
        with open(path, "rb") as f:
            field = sign(f, domain="a.test", selector="s", private_key_pem=pem)
        with open(path, "rb") as f:
            arc = b"".join(seal(f, domain="a.test", selector="s", key=load_private_key(pem),
                                authserv_id="mx.a.test", auth_results=ar))
        with open(path + ".signed", "wb") as out, open(path, "rb") as f:
            out.write(arc + ar.encode() + b"\r\n" + field)
            shutil.copyfileobj(f, out)
        with open(path + ".signed", "rb") as f:
            [r] = asyncio.run(verify(f, resolver=resolver))
        with open(path + ".signed", "rb") as f:
            chain = asyncio.run(verify_chain(f, resolver))
        return r.result, chain.result

    small = run(work + "/small", 1000)
    base = rss_kib()
    big = run(work + "/big", 640_000)  # 640,000 lines of 78 octets: ~50 MB
    print(json.dumps({"small": small, "big": big, "base_kib": base,
                      "growth_kib": rss_kib() - base,
                      "size": __import__("os").path.getsize(work + "/big.signed")}))
    """
)


def test_signing_and_verifying_50_mb_grows_rss_by_a_few_mb(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    found = json.loads(done.stdout)
    assert found["small"] == ["pass", "pass"] and found["big"] == ["pass", "pass"]
    assert found["size"] > 49_000_000
    print(f"\n50 MB sign+seal+verify+arc: RSS grew {found['growth_kib']} KiB", file=sys.stderr)
    assert found["growth_kib"] < 8 * 1024, found
