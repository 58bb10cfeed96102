# syntax=docker/dockerfile:1
# pgwitness: build a virtualenv with the main dependencies only (no test extra, so no
# `weed`, psycopg or pytest), then copy it into a slim runtime that runs as a non-root user.

FROM python:3.11-slim-bookworm AS build
# a compiler for the compiled hot path (and any dependency without a wheel here); it stays
# in this stage
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/pgwitness
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY proxy ./proxy
COPY policy ./policy
COPY recorder ./recorder
COPY devtools ./devtools
# The hot path compiled with mypyc in the installed copy (docs/decisions.md, "A compiled
# hot path"); mypy comes from a throwaway directory, so the runtime image does not carry it.
# The proxy's "listening" log line says hot_path=compiled.
RUN /opt/pgwitness/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/pgwitness/bin/pip install --no-cache-dir . \
 && /opt/pgwitness/bin/pip install --no-cache-dir --target /tmp/mypyc "mypy>=1.10" "setuptools>=65" \
 && cd /tmp && PYTHONPATH=/tmp/mypyc /opt/pgwitness/bin/python -m devtools.compile \
 && rm -rf /tmp/mypyc \
 && /opt/pgwitness/bin/python -c "from common import compiled; assert compiled.status().compiled, compiled.status()" \
 && /opt/pgwitness/bin/pgwitness --help >/dev/null

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 pgwitness \
 && useradd --system --uid 10001 --gid pgwitness --home-dir /var/lib/pgwitness \
      --shell /usr/sbin/nologin pgwitness \
 && mkdir -p /var/lib/pgwitness/keys /var/lib/pgwitness/state /etc/pgwitness \
 && chown -R pgwitness:pgwitness /var/lib/pgwitness
COPY --from=build /opt/pgwitness /opt/pgwitness
ENV PATH=/opt/pgwitness/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PGWITNESS_HEALTHCHECK_URL=http://127.0.0.1:9187/metrics
USER pgwitness
WORKDIR /var/lib/pgwitness
EXPOSE 6432 9187
# Alive = the metrics endpoint answers (it does not open a Postgres session, so it leaves no
# connection in the metrics or the recordings). Set PGWITNESS_HEALTHCHECK_URL to follow a
# metrics.listen other than the default port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['PGWITNESS_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["pgwitness"]
CMD ["serve"]
