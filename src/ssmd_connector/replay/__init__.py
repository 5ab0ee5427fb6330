"""Replay: an archive served back as a Kalshi WebSocket, so an unmodified client backtests on
recorded data — :mod:`.source` reads the archive in receive order, :mod:`.books` rebuilds order
books at the replay clock, :mod:`.server` speaks Kalshi's protocol through the same server session
the simulator uses (:mod:`ssmd_connector.kalshi.server`), one clock per connection.
"""
