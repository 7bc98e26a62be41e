#!/usr/bin/env bash
# Installs the real parts edgebot's tests and demo run (Debian packages). Idempotent and quick when present.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd && file -L /bin/busybox 2>/dev/null | grep -q static \
  || need+=(busybox-static)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v git >/dev/null || need+=(git)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v file >/dev/null || need+=(file)
command -v docker-compose >/dev/null || need+=(docker-compose)   # validates deploy/docker-compose.yml (tests)
command -v promtool >/dev/null || need+=(prometheus)               # checks deploy/prometheus/ rules (tests)
# the push (workers/skopeo_push.py) and its benchmark's streamed-upload limit (bench/push_speed.py)
command -v skopeo >/dev/null || need+=(skopeo)
command -v pigz >/dev/null || need+=(pigz)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${need[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/edgebot-apt.log 2>&1 || {
  $SUDO apt-get update -q >>/tmp/edgebot-apt.log 2>&1
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >>/tmp/edgebot-apt.log 2>&1 || { tail -20 /tmp/edgebot-apt.log; exit 1; }
}
