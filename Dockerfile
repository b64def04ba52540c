# radiusd: RADIUS server for public Wi-Fi (phone number + one-time SMS password).
#
#   docker compose up -d --build      # see docker-compose.yml and README "Docker"
#
# The image holds the code and the dictionaries only; the configuration is mounted at
# /etc/radiusd/radiusd.toml (read-only; readable by group 1812: on the host
# `chgrp 1812 radiusd.toml && chmod 640 radiusd.toml`), the state (SQLite database)
# lives in the /data volume, which is also the working directory, so the default
# relative path ("radiusd.db") lands there, and the sealing key in its own /keys volume
# (RADIUSD_KEY_FILE), to be backed up apart from the database (docs/keys.md). A
# radiusd.key that an earlier image left in /data is still used, with a warning saying
# how to move it.
#
# BASE: any Debian-based image with python3 (3.11+) and its venv module. The default is
# the official Python image; tests/test_docker.py builds from a base made with
# debootstrap (no image registry there): --build-arg BASE=radiusd-base:bookworm.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/radiusd/bin:$PATH \
    RADIUSD_DICTIONARIES=/usr/local/share/radiusd/dictionaries \
    RADIUSD_KEY_FILE=/keys/radiusd.key \
    TZ=UTC

# Times in the journal, exports and the log are local time: TZ picks the zone (e.g.
# `-e TZ=Asia/Almaty`), which needs the zone files (tzdata).
RUN if [ ! -e /usr/share/zoneinfo/Asia/Almaty ]; then \
        apt-get update && apt-get install -y --no-install-recommends tzdata \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Install from the source tree into a venv (Debian's own python3 refuses system-wide
# pip installs, PEP 668). pyproject.toml's [tool.setuptools.data-files] puts
# dictionaries/ under sys.prefix/share/radiusd/dictionaries; the explicit copy and
# RADIUSD_DICTIONARIES make that independent of setuptools.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY radiusd/ radiusd/
COPY dictionaries/ dictionaries/
COPY docker/entrypoint.sh /usr/local/bin/radiusd-entrypoint
COPY docker/healthcheck.py /usr/local/bin/radiusd-healthcheck
RUN python3 -m venv /opt/radiusd \
    && pip install . \
    && mkdir -p /usr/local/share/radiusd/dictionaries \
    && cp -r dictionaries/. /usr/local/share/radiusd/dictionaries/ \
    && chmod 755 /usr/local/bin/radiusd-entrypoint /usr/local/bin/radiusd-healthcheck \
    && cd / && rm -rf /src \
    && radiusd --version

# Never run as root: 1812/1813 are above 1024, nothing needs privileges.
RUN groupadd --system --gid 1812 radiusd \
    && useradd --system --uid 1812 --gid radiusd --home-dir /data \
        --shell /usr/sbin/nologin radiusd \
    && mkdir -p /data /etc/radiusd /keys \
    && chown radiusd:radiusd /data /keys \
    && chmod 700 /keys
USER radiusd
WORKDIR /data
VOLUME ["/data", "/keys"]

# 1812/udp authentication, 1813/udp accounting (RFC 2865, RFC 2866); 8080/tcp the
# portal, the API and /healthz when the config has [http] listen = ["0.0.0.0:8080"].
EXPOSE 1812/udp 1813/udp 8080/tcp

# GET /healthz on the config's HTTP listener (200: serving; 503: a part is failing).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["radiusd-healthcheck"]

# The entry point checks the mounted config first (missing, a directory, unreadable:
# said in words, exit 78), then execs radiusd, which is PID 1 and gets SIGTERM itself
# (it finishes the requests in flight, flushes the database, and exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["radiusd-entrypoint"]
CMD ["serve", "-c", "/etc/radiusd/radiusd.toml"]
