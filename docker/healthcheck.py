#!/opt/radiusd/bin/python
"""HEALTHCHECK: GET /healthz on the HTTP listener the mounted config names.

/healthz is served on `[http] metrics_listen` when set, else on `[http] listen`; a
wildcard address is asked on loopback. Exit 0 on 200, 1 otherwise, with one line.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from radiusd.config import ConfigError, load, parse_listen


def main() -> int:
    path = os.environ.get("RADIUSD_CONFIG", "/etc/radiusd/radiusd.toml")
    try:
        config = load(path)
    except ConfigError as e:
        print(f"unhealthy: {e}")
        return 1
    listen = config.http.metrics_listen or config.http.listen
    if not listen:
        print(f'unhealthy: {path} has no [http] listen (e.g. ["0.0.0.0:8080"]) to ask '
              "/healthz on")
        return 1
    host, port = parse_listen(listen[0])
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as reply:
            print(f"{url}: {reply.status}")
            return 0
    except urllib.error.HTTPError as e:
        print(f"unhealthy: {url}: {e.code} {e.read(300).decode(errors='replace')}")
    except OSError as e:
        print(f"unhealthy: {url}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
