# syntax=docker/dockerfile:1
# Slim runtime image for arb-exporter: non-root, Python HEALTHCHECK (slim images have no curl).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/cryptoarb_exporter-*.whl

FROM python:3.11-slim
LABEL org.opencontainers.image.title="cryptoarb-exporter" \
      org.opencontainers.image.description="Prometheus exporter for cross-exchange crypto arbitrage"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/cryptoarb_exporter-*.whl \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cryptoarb
COPY config.example.yaml /etc/cryptoarb/config.yaml
USER 10001
EXPOSE 9877
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:9877/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["arb-exporter"]
CMD ["run", "--config.file", "/etc/cryptoarb/config.yaml", "--web.listen-address", "0.0.0.0:9877"]
