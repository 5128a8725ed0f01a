"""What every session of one listener shares: the settings ``app`` builds per role.

Not security sensitive by itself; it names which policy chain, TLS context and
authenticator a listener's sessions use.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from kittiwake.envelope import Reply
from kittiwake.policy import PolicyChain
from kittiwake.proto import events as ev
from kittiwake.smtpd.auth import Authenticator
from kittiwake.smtpd.intake import Intake, QueuedNotice


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """Everything a session needs that is fixed per listener."""

    role: str
    proto: ev.ProtoConfig
    policy: PolicyChain
    intake: Intake
    authenticator: Authenticator
    tls_context: ssl.SSLContext | None
    command_timeout: float
    data_timeout: float
    on_queued: Callable[[QueuedNotice], None]
    implicit_tls: bool = False
    etrn: Callable[[str, str], Awaitable[Reply]] | None = None  # (argument, client ip) → reply
    spool_dir: Path | None = None  # DATA checks' temporary files (None: the system's)
