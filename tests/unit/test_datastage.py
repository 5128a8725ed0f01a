"""``smtpd.datastage``: the fields written above our Received line, and the tee."""

from __future__ import annotations

import pytest

from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.policy import PolicyChain
from kittiwake.policy.message import MessageContext
from kittiwake.policy.results import Results
from kittiwake.policy.verdict import Verdict, add_header, quarantine
from kittiwake.smtpd.datastage import DataStage, header_block

SESSION = SessionInfo("192.0.2.1", 1000, "127.0.0.1", 25)
ENVELOPE = Envelope("a@a.test", (Recipient("b@b.test"),))


def test_header_block_folds_long_fields_at_semicolons() -> None:
    short = header_block([("X-A", "one; two")])
    assert short == b"X-A: one; two\r\n"
    value = "; ".join(f"method{i}=pass" for i in range(8))
    folded = header_block([("Authentication-Results", value)]).decode()
    assert folded.endswith("\r\n") and ";\r\n\tmethod7=pass\r\n" in folded
    assert all(len(line) <= 78 for line in folded.split("\r\n"))


@pytest.mark.parametrize("field", [("Bad Name", "x"), ("X-A", "a\r\nB: c"), ("", "x")])
def test_header_block_refuses_injection(field: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        header_block([field])


class Marks:
    name = "marks"

    async def data(self, ctx: MessageContext) -> Verdict:
        assert ctx.headers["Subject"] == "hi"
        with ctx.open_body() as body:
            assert body.read().endswith(b"\r\nbody\r\n")
        return add_header("X-Checked", "yes")


class Junk:
    name = "junk"

    async def data(self, ctx: MessageContext) -> Verdict:
        return quarantine("bad\r\nsmell")


class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.queue_id = "Q"

    def write(self, data: bytes) -> None:
        self.data += data


async def test_check_prepend_and_replay() -> None:
    stage = DataStage()
    try:
        for chunk in (b"Subject: hi\r\n", b"\r\n", b"body\r\n"):
            stage.write(chunk)
        verdict = await stage.check(PolicyChain([Marks(), Junk()]), SESSION, ENVELOPE, Results())
        assert not verdict.decided
        assert stage.prepend() == b"X-Kittiwake-Quarantine: junk: bad??smell\r\nX-Checked: yes\r\n"
        sink = Sink()
        stage.replay(sink)  # type: ignore[arg-type]
        assert sink.data == b"Subject: hi\r\n\r\nbody\r\n"
    finally:
        stage.close()


def test_replay_drops_forged_authentication_results_claiming_us() -> None:
    stage = DataStage()
    forged = b"Authentication-Results: MX.B.test;\r\n\tspf=pass\r\n"
    theirs = b"Authentication-Results: other.test; spf=fail\r\n"
    body = b"\r\nAuthentication-Results: mx.b.test; in the body stays\r\n"
    try:
        stage.write(forged + theirs + b"Subject: hi\r\n" + body)
        sink = Sink()
        stage.replay(sink, "mx.b.test")  # type: ignore[arg-type]
        assert sink.data == theirs + b"Subject: hi\r\n" + body
        headless = Sink()
        stage.close()
        stage = DataStage()
        stage.write(body)  # no header section at all: nothing is taken for one
        stage.replay(headless, "mx.b.test")  # type: ignore[arg-type]
        assert headless.data == body
    finally:
        stage.close()
