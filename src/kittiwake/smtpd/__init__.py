"""The SMTP server: drives the sans-I/O core over asyncio streams, one task per session."""
