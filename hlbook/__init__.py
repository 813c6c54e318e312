"""hlbook: exact per-order Hyperliquid order books from a node's files, over WebSocket."""

__version__ = "0.1.0"
