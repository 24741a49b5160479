# One image for both servers: `trio-range origin` (the default) or `trio-range proxy`.
# docker-compose.yml runs one of each. Not built on the project's machines (no Docker engine
# there): tests/test_deployment.py checks these commands against the CLI and runs them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The locked dependencies first, hash-checked (requirements/run.txt: runtime only, the versions
# `make test` ran against), in their own layer: a change to src/ does not reinstall them.
COPY requirements/run.txt ./requirements/run.txt
RUN pip install --require-hashes -r requirements/run.txt
# pyproject.toml names README.md as the package's readme: the build needs it.
COPY pyproject.toml README.md ./
COPY src ./src
# Then the package alone, built by the locked setuptools; pip check fails on a stale lock.
RUN pip install . --no-deps --no-build-isolation \
    && pip check \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin trio-range

# The shipped sample media, so `docker run -p 9090:9090 IMAGE` plays something; compose mounts
# the host's ./media over it, read-only.
COPY media /srv/media
WORKDIR /srv

# Containers listen on every interface (the servers default to 127.0.0.1, right for a laptop
# and useless behind Docker's port mapping).
ENV TRIO_RANGE_ORIGIN_HOST=0.0.0.0 \
    TRIO_RANGE_ORIGIN_MEDIA_DIR=/srv/media \
    TRIO_RANGE_PROXY_HOST=0.0.0.0 \
    HEALTHCHECK_URL=http://127.0.0.1:9090/healthz

USER trio-range
EXPOSE 9090 8080

# The slim image has no curl: the check is Python's urllib, which exits non-zero on an error
# status or no answer. HEALTHCHECK_URL names the port of the server this container runs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=2)"]

# SIGTERM (docker stop) finishes in-flight requests and exits 0.
CMD ["trio-range", "origin"]
