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
# BuildKit-syntax Dockerfiles and build secrets (issue 14): the daemonless builder, builder = "buildah"
command -v buildah >/dev/null || need+=(buildah)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v file >/dev/null || need+=(file)
command -v docker-compose >/dev/null || need+=(docker-compose)   # validates deploy/docker-compose.yml (tests)
command -v promtool >/dev/null || need+=(prometheus)               # checks deploy/prometheus/ rules (tests)
# private git sources (tests/test_source_auth.py): a real sshd on loopback and the ssh client git runs
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${need[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/edgebot-apt.log 2>&1 || {
  $SUDO apt-get update -q >>/tmp/edgebot-apt.log 2>&1
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >>/tmp/edgebot-apt.log 2>&1 || { tail -20 /tmp/edgebot-apt.log; exit 1; }
}
