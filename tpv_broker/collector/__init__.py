"""The collector: reads destination metrics from InfluxDB on a schedule and
publishes them to Redis as one atomic snapshot."""
