# radiusd: RADIUS server for public Wi-Fi (phone number + one-time SMS password).
#
#   docker compose up -d --build      # see docker-compose.yml
#
# The image holds the code and the dictionaries only; the configuration is mounted at
# /etc/radiusd/radiusd.toml, the state (SQLite database) lives in the /data volume,
# which is also the working directory, so the default relative path ("radiusd.db")
# lands there, and the sealing key in its own /keys volume (RADIUSD_KEY_FILE), to be
# backed up apart from the database (docs/keys.md). A radiusd.key that an earlier
# image left in /data is still used, with a warning saying how to move it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RADIUSD_DICTIONARIES=/usr/local/share/radiusd/dictionaries \
    RADIUSD_KEY_FILE=/keys/radiusd.key

# Install from the source tree. pyproject.toml's [tool.setuptools.data-files] already
# puts dictionaries/ under sys.prefix/share/radiusd/dictionaries (= the path above);
# the explicit COPY and RADIUSD_DICTIONARIES make that independent of setuptools.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY radiusd/ radiusd/
COPY dictionaries/ dictionaries/
RUN pip install . \
    && mkdir -p /usr/local/share/radiusd/dictionaries \
    && cp -r dictionaries/. /usr/local/share/radiusd/dictionaries/ \
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

# 1812/udp authentication, 1813/udp accounting (RFC 2865, RFC 2866).
EXPOSE 1812/udp 1813/udp

# Exec form: radiusd is PID 1 and gets SIGTERM itself (it finishes the requests in
# flight, flushes the database, and exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["radiusd"]
CMD ["serve", "-c", "/etc/radiusd/radiusd.toml"]
