"""One small error hierarchy. Every message names the offending item, so the
CLI can print it as it is and exit 1 without a traceback."""


class BrokerError(Exception):
    """Base of every error TPV Broker raises on purpose."""


class ConfigError(BrokerError):
    """The configuration file or an environment override is invalid."""


class MetricSourceError(BrokerError):
    """InfluxDB could not be reached or did not answer sensibly."""


class MetricSourceTimeout(MetricSourceError):
    """InfluxDB did not answer, or finish its answer, within the time limit."""


class StoreError(BrokerError):
    """Redis could not be reached or refused a command."""
