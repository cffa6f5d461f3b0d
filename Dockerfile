# axis-exporter: the receiver for Axis people counters' Generic Data Push.
#   docker build -t axis-exporter .
#   docker run -p 8080:8080 -e INFLUXDB_V2_URL=... -e INFLUXDB_V2_TOKEN=... -e INFLUXDB_V2_BUCKET=axis axis-exporter
# docker-compose.yml at the repository root runs it with InfluxDB, Prometheus and Grafana.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install . \
    && rm -rf /src

# A fixed uid: the InfluxDB init script (influxdb/initdb.d) hands the exporter's token file to it.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /var/lib/axis-exporter \
        --shell /usr/sbin/nologin axis-exporter \
    && install -d -o axis-exporter -g axis-exporter -m 0750 /var/lib/axis-exporter \
        /var/lib/axis-exporter/deadletter /var/lib/axis-exporter/certs /run/axis-exporter /run/axis-exporter/metrics \
    && chmod 0755 /var/lib/axis-exporter/certs

# Pushes that could not be stored are kept in deadletter/: mount a volume. certs/ holds the HTTPS
# certificate made by `axis-exporter certs` (see docker-compose.yml). The multiprocess metrics directory
# only has to live as long as the container (a tmpfs in docker-compose.yml); serve empties it at start.
ENV AXIS_EXPORTER_BIND=0.0.0.0:8080 \
    AXIS_EXPORTER_DEADLETTER_DIR=/var/lib/axis-exporter/deadletter \
    PROMETHEUS_MULTIPROC_DIR=/run/axis-exporter/metrics

WORKDIR /var/lib/axis-exporter
USER 10001:10001
EXPOSE 8080

# /healthz over http or, when a certificate is configured, https (any certificate: it is our own).
# python:3.11-slim has no curl; urllib does the job.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request as u; port = os.environ.get('AXIS_EXPORTER_BIND', '0.0.0.0:8080').rsplit(':', 1)[1]; tls = bool(os.environ.get('AXIS_EXPORTER_CERTFILE')); ctx = ssl._create_unverified_context() if tls else None; url = ('https' if tls else 'http') + '://127.0.0.1:' + port + '/healthz'; sys.exit(0 if u.urlopen(url, timeout=4, context=ctx).status == 200 else 1)"]

CMD ["axis-exporter", "serve"]
