"""TPV Broker: metrics-informed ranking of TPV destinations."""

__version__ = "0.1.0"
