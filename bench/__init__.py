"""Benchmark: Kittiwake vs Postfix vs aiosmtpd (see bench/README.md)."""
