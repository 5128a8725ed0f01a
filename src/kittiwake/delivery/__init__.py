"""Delivery agents: one contract, one outcome per recipient (maildir, later lmtp and smtp)."""
