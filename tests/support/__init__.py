"""Test support: helpers that run real peers (Postfix, ...) privately on loopback."""
