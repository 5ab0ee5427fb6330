"""What the archive covers, read from the coverage ledger (and the frames): per market, the
intervals it was subscribed (:mod:`.model`), and the moments its order book stopped being known
(:mod:`.holes`). Above ``archive`` (the files) and ``kalshi`` (the vocabulary); used by the tools,
the export and replay."""
