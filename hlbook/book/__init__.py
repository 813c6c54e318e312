"""The pure (no I/O) book engine: L4 books, block joining, L2 views, trades, compare."""
