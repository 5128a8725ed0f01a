"""Sans-I/O SMTP/LMTP protocol core: bytes in, events out; answers in, bytes out.

Never imports asyncio, socket or ssl (a test enforces it). Any remote input either parses
or raises ``RemoteProtocolError``; any other exception is a bug (a hypothesis test says so).
"""

from kittiwake.proto.events import (
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthResponse,
    AuthStart,
    BadCommand,
    BareLinefeedPolicy,
    BodyData,
    BodyEnd,
    Closing,
    ConnectionClosed,
    DataStart,
    Etrn,
    Event,
    Helo,
    MailFrom,
    Noop,
    ProtoConfig,
    Quit,
    RcptTo,
    Reset,
    Sentinel,
    StartTLS,
)
from kittiwake.proto.server import ServerConnection
from kittiwake.proto.state import State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthCancelled",
    "AuthResponse",
    "AuthStart",
    "BadCommand",
    "BareLinefeedPolicy",
    "BodyData",
    "BodyEnd",
    "Closing",
    "ConnectionClosed",
    "DataStart",
    "Etrn",
    "Event",
    "Helo",
    "MailFrom",
    "Noop",
    "ProtoConfig",
    "Quit",
    "RcptTo",
    "Reset",
    "Sentinel",
    "ServerConnection",
    "StartTLS",
    "State",
]
