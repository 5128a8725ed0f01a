"""Crash simulation: commit in a child process, SIGKILL it the moment commit returns, reopen.

A SIGKILL does not lose the page cache (the kernel survives), so this checks the process
side of the promise: everything commit() acknowledged is in the database and the spool,
nothing half-written is left behind, and the next open() cleans up after the dead writer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from kittiwake.delivery.api import RecipientStatus
from kittiwake.queue.sqlite import SQLiteStore

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from kittiwake.envelope import Envelope, Recipient
    from kittiwake.queue.sqlite import SQLiteStore

    ENV = Envelope("a@example.org", (Recipient("b@example.net"),))

    async def put(s, body):
        w = s.new_message()
        w.write(body)
        return await s.commit(w, ENV)

    async def main():
        s = SQLiteStore(Path(sys.argv[1]))
        await s.open()
        small = await put(s, b"small body\\r\\n")
        big = await put(s, b"B" * 200_000)
        many = await asyncio.gather(*(put(s, b"m%d\\r\\n" % i) for i in range(20)))
        half = s.new_message()
        half.write(b"H" * 200_000)  # spilled to disk, never committed
        ids = [small.queue_id, big.queue_id, half.queue_id] + [m.queue_id for m in many]
        print(" ".join(ids), flush=True)
        await asyncio.sleep(60)  # killed here

    asyncio.run(main())
    """
)


async def test_committed_mail_survives_sigkill(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline().decode()
            os.kill(proc.pid, signal.SIGKILL)  # the moment commit() has returned
        finally:
            proc.wait(timeout=10)
        errors = proc.stderr.read().decode()
    assert line, errors
    small, big, half, *many = line.split()
    assert (tmp_path / "queue" / "spool" / half).exists()  # the dead writer's leftover

    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        pending = {m.queue_id: m for m in await store.pending()}
        assert set(pending) == {small, big, *many}
        assert all(
            r.status is RecipientStatus.PENDING for m in pending.values() for r in m.recipients
        )
        with store.open_body(small) as f:
            assert f.read() == b"small body\r\n"
        with store.open_body(big) as f:
            assert f.read() == b"B" * 200_000
        for i, qid in enumerate(many):
            with store.open_body(qid) as f:
                assert f.read() == b"m%d\r\n" % i
        assert not (store.spool_dir / half).exists()  # uncommitted: removed at open
    finally:
        await store.close()
