"""Where messages land: the date-partitioned JSONL archive (:mod:`.jsonl`: buffering, rotation,
compression and sealing, and the I/O; the format itself is :mod:`ssmd_connector.archive`'s) and
JetStream (:mod:`.nats`). :mod:`ssmd_connector.assembly.writers` builds the writers an
environment asks for.
"""
