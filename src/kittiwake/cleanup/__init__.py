"""The way into the queue: trace header, spool, commit (``cleanup.writer``)."""
