"""The WebSocket server: client protocol, fan-out, connections."""
