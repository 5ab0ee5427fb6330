"""The Kalshi connector: the thin I/O around :mod:`ssmd_connector.kalshi` — shards over WebSocket
(:mod:`.connector`) and market discovery over REST (:mod:`.rest`)."""
