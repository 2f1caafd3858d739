"""The core both the collector and the API use: config, Redis key schema and
snapshot store, snapshot models and the pure ranking code. It imports neither
``tpv_broker.api`` nor ``tpv_broker.collector``."""
