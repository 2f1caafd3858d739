# One image for both services; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tpv_broker ./tpv_broker
# The same system user as the systemd units (deploy/systemd/).
RUN pip install --no-cache-dir . \
    && useradd --system --no-create-home --shell /usr/sbin/nologin tpv-broker
COPY config.yaml /etc/tpv-broker/config.yaml
ENV TPV_BROKER_CONFIG=/etc/tpv-broker/config.yaml
USER tpv-broker
EXPOSE 8000
# Both services stop cleanly on SIGTERM (the collector after its cycle,
# gunicorn after each worker's request).
STOPSIGNAL SIGTERM
# Without a command: check the config and the connections, then exit.
CMD ["tpv-broker", "check-config"]
