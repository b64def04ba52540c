#!/bin/sh
# radiusd's container entry point: say in words what is wrong with the mounted config
# (missing, a directory, unreadable) instead of a traceback, then exec radiusd as PID 1.
# Exit 78 (EX_CONFIG, sysexits.h) on such a problem; docker-compose.yml restarts at most
# 5 times on failure, so a config error does not loop.
set -eu

config=""
if [ "${1:-}" = "serve" ] || [ "${1:-}" = "check-config" ]; then
    prev=""
    for arg in "$@"; do
        if [ "$prev" = "-c" ] || [ "$prev" = "--config" ]; then config="$arg"; fi
        prev="$arg"
    done
fi

fail() {
    echo "radiusd: $config: $*" >&2
    exit 78
}

if [ -n "$config" ]; then
    if [ -d "$config" ]; then
        fail "is a directory, not the config file: Docker made it because the file to" \
             "mount (./radiusd.toml) did not exist on the host. On the host: remove that" \
             "directory, cp radiusd.example.toml radiusd.toml, edit it, start again."
    elif [ ! -e "$config" ]; then
        fail "no config file is mounted there. On the host: cp radiusd.example.toml" \
             "radiusd.toml, edit it, and mount it read-only at $config" \
             "(docker-compose.yml does)."
    elif [ ! -r "$config" ]; then
        fail "not readable by the container user $(id -un) (uid $(id -u), gid $(id -g))." \
             "On the host: chgrp $(id -g) radiusd.toml && chmod 640 radiusd.toml"
    fi
fi
exec radiusd "$@"
