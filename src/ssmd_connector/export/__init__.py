"""``ssmd export``: the archive as typed, exact, columnar research datasets (Parquet).

Why a package of its own: every study starts by re-deriving the same things from raw frames —
trades, the book at each moment, the top of book, what was covered — and getting books right from
Kalshi's deltas is where people lose days. One streaming pass over the archive produces them all:

* :mod:`.frames` — archive lines decoded many at a time into typed structs (msgspec);
* :mod:`.tables` — each table's columns and their Arrow types (exact decimals, UTC timestamps);
* :mod:`.books` — ``book_deltas``, ``quotes``, ``book_snapshots`` from the one exact book model
  (:class:`~ssmd_connector.kalshi.book.OrderBook`), honest about books it does not know;
* :mod:`.messages` — ``trades``, ``tickers``, ``lifecycle``: the messages, typed;
* :mod:`..coverage.holes` — the ledger events that make a book unknown (gaps, disconnects);
* :mod:`.coverage` — the ``coverage`` table, from ``ssmd coverage``'s model;
* :mod:`.writer` — date-partitioned Parquet, replaced atomically per run;
* :mod:`.run` — the pass itself (one job's: every market, or every N-th);
* :mod:`.jobs` — the pass shared by several processes (``--jobs``), committed as one.
"""
