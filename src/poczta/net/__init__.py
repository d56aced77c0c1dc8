"""The asyncio network layer: listeners, connections, TLS."""
