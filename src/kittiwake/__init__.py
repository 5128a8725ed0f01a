"""Kittiwake: a complete Internet mail system in Python.

The pipeline (see README "Architecture"): ``net`` listeners hand sockets to ``smtpd``,
which drives the sans-I/O ``proto`` core, asks ``policy`` for verdicts and streams bodies
through ``cleanup`` into the durable ``queue``; the queue hands messages to ``delivery``
agents and records one outcome per recipient.
"""

__version__ = "0.1.0"
