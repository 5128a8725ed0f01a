"""The durable queue: the store (persistence) and, apart from it, what decides what to try now."""
