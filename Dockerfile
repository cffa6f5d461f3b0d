# axis-exporter: the receiver for Axis people counters' Generic Data Push.
#   docker build -t axis-exporter .
#   docker run -p 8080:8080 -e INFLUXDB_V2_URL=... -e INFLUXDB_V2_TOKEN_FILE=... -e INFLUXDB_V2_BUCKET=axis axis-exporter
# docker-compose.yml at the repository root runs it with InfluxDB, Prometheus and Grafana.
# Pinned to a Python patch release and a Debian release; README "Upgrading" says how to move it.
FROM python:3.11.16-slim-bookworm

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
# deadletter/ and tls/ are volumes in docker-compose.yml: a new volume takes the owner and mode of the
# directory it is mounted on. The CA that signs tls/ lives on a volume only the `certs` service mounts.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /var/lib/axis-exporter \
        --shell /usr/sbin/nologin axis-exporter \
    && install -d -o axis-exporter -g axis-exporter -m 0750 /var/lib/axis-exporter \
        /var/lib/axis-exporter/deadletter /var/lib/axis-exporter/tls \
    && install -d -o axis-exporter -g axis-exporter -m 0700 /var/lib/axis-exporter/ca

# Pushes on 8080 (what cameras reach); /metrics, /readyz and /healthz on 10464, plain HTTP, for the
# container network only (publish it on loopback at most). The workers' shared metrics live in a private
# directory under /tmp, which serve makes at start and removes at exit.
ENV AXIS_EXPORTER_BIND=0.0.0.0:8080 \
    AXIS_EXPORTER_ADMIN_BIND=0.0.0.0:10464 \
    AXIS_EXPORTER_DEADLETTER_DIR=/var/lib/axis-exporter/deadletter

WORKDIR /var/lib/axis-exporter
USER 10001:10001
EXPOSE 8080 10464

# /healthz of the admin listener: plain HTTP on loopback whatever the push listener does (TLS or not).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; host, _, port = os.environ.get('AXIS_EXPORTER_ADMIN_BIND', '127.0.0.1:10464').rpartition(':'); host = host.strip('[]'); host = {'0.0.0.0': '127.0.0.1', '::': '::1', '': '127.0.0.1'}.get(host, host); host = '[' + host + ']' if ':' in host else host; sys.exit(0 if u.urlopen('http://' + host + ':' + port + '/healthz', timeout=4).status == 200 else 1)"]

CMD ["axis-exporter", "serve"]
