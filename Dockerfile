# One image for both services; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tpv_broker ./tpv_broker
RUN pip install --no-cache-dir . && useradd --system tpvbroker
COPY config.yaml /etc/tpv-broker/config.yaml
ENV TPV_BROKER_CONFIG=/etc/tpv-broker/config.yaml
USER tpvbroker
CMD ["tpv-broker", "--help"]
