"""Sockets and transport security: listeners, connection limits, TLS contexts, DNS.

Nothing SMTP-specific lives here. Modules are imported directly (``kittiwake.net.tls``);
this package imports nothing so that importing one part never drags in the others.
"""
