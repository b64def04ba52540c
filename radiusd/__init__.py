"""radiusd: an asyncio RADIUS server for public Internet access points."""

__version__ = "0.1.0"
