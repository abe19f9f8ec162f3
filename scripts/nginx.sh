#!/usr/bin/env bash
# nginx for tests: gatewayd/tests/nginx.rs runs deploy/nginx-switchboard.conf in front of two
# gateway processes with it.
#
#   scripts/nginx.sh install    make sure an nginx binary exists (installing Debian's package
#                               when missing, which needs root); prints its path
#
# The tests start their own nginx (in the foreground, on a free loopback port, with a config and
# logs in a temporary directory) and kill it when they end. This script never leaves one
# running: a temporary /usr/sbin/policy-rc.d (exit 101, removed afterwards; an existing one is
# left alone) keeps the package's postinst from starting the daemon, and a daemon the package
# started anyway (pidfile /run/nginx.pid, not running before) is stopped. Idempotent: with nginx
# already there, `install` only prints the path.
#
# The package is `nginx`: in Debian bookworm that is the plain server, and `nginx-light` only
# adds the echo module on top of it. The tests need nginx >= 1.19.5 (`-e`); bookworm has 1.22.
set -euo pipefail

PIDFILE=/run/nginx.pid
POLICY=/usr/sbin/policy-rc.d
PACKAGE=nginx

die() { echo "nginx.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The nginx binary: on PATH, or in /usr/sbin (often not on a user's PATH).
find_nginx() {
    local p
    if p="$(command -v nginx 2>/dev/null)" && [[ -x "$p" ]]; then
        echo "$p"
    elif [[ -x /usr/sbin/nginx ]]; then
        echo /usr/sbin/nginx
    else
        return 1
    fi
}

# The PID in the package's pidfile if that process is alive and is an nginx master; nothing
# otherwise (a stale pidfile whose PID was reused names some other process).
daemon_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(tr -d '[:space:]' <"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "^nginx: master process" || return 1
    echo "$pid"
}

# Stops the daemon with this master PID: fast shutdown (TERM), KILL after 10 s.
stop_daemon() {
    local pid="$1"
    echo "nginx.sh: the package started an nginx daemon (pid $pid); stopping it" >&2
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

apt_install() {
    # apt's output goes to stderr: stdout carries only the path. The lock timeout waits for
    # another apt or dpkg run instead of failing at once.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "$PACKAGE" >&2
}

cmd_install() {
    local bin before pid own_policy=""
    if bin="$(find_nginx)"; then
        echo "$bin"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        die "nginx is not installed; as root run \`scripts/nginx.sh install\` (or \`apt-get install --no-install-recommends nginx\`)"
    fi
    command -v apt-get >/dev/null || die "nginx is not installed and there is no apt-get here: install nginx (>= 1.19.5) by hand"
    # One installer at a time; the others then find it done.
    mkdir -p /run/lock
    exec 9>/run/lock/switchboard-nginx-install.lock
    flock 9
    if bin="$(find_nginx)"; then
        echo "$bin"
        return 0
    fi
    before="$(daemon_pid)" || before=""
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\n# Written by scripts/nginx.sh for the time of its install: start no service.\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        own_policy=1
        trap 'rm -f "$POLICY"' EXIT
    fi
    if ! apt_install; then
        # Missing or stale package lists (e.g. a fresh container): fetch them and try once more.
        echo "nginx.sh: apt-get install failed; running apt-get update and trying again" >&2
        apt-get update -q >&2 || die "apt-get update failed"
        apt_install || die "apt-get could not install $PACKAGE"
    fi
    if [[ -n "$own_policy" ]]; then
        rm -f "$POLICY"
        trap - EXIT
    fi
    if pid="$(daemon_pid)" && [[ "$pid" != "$before" ]]; then
        stop_daemon "$pid"
    fi
    bin="$(find_nginx)" || die "$PACKAGE is installed but no nginx binary was found"
    echo "nginx.sh: installed $("$bin" -v 2>&1)" >&2
    echo "$bin"
}

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    *) usage ;;
esac
