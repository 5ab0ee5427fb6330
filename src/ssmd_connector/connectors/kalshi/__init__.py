"""Kalshi: the sans-I/O protocol core (``protocol``), signing (``auth``), discovery (``rest``),
and the thin I/O around them (``connector``)."""
