"""Sans-I/O SMTP/LMTP protocol core: bytes in, events out; answers in, bytes out.

Never imports asyncio, socket or ssl (a test enforces it). Any remote input either parses
or raises ``RemoteProtocolError``; any other exception is a bug (a hypothesis test says so).
"""
