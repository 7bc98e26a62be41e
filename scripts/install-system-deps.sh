#!/usr/bin/env bash
# Installs the real parts edgebot's tests and demo run (Debian packages). Idempotent and quick when present.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -x httpd >/dev/null && file -L /bin/busybox 2>/dev/null | grep -q static \
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
# a real Prometheus scraping the bot and a worker (issue 17, tests/test_prometheus_e2e.py): same Debian package
command -v prometheus >/dev/null || need+=(prometheus)
# private git sources (tests/test_source_auth.py): a real sshd on loopback and the ssh client git runs
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# pictures of the Slack messages (issue 17): `make pictures` and tests/test_pictures.py screenshot the Block Kit
# rendering with Debian's headless Chromium; Lato (Slack's typeface) and colour emoji so they look like Slack
command -v chromium >/dev/null || need+=(chromium)
[ -e /usr/share/fonts/truetype/lato/Lato-Regular.ttf ] || need+=(fonts-lato)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
# cross-arch builds (issue 14): QEMU user-mode emulation through binfmt_misc. After the packages are in (on exit,
# also when nothing was missing): binfmt_misc mounted, the handlers enabled (a container without systemd does not
# register them by itself), and the sandbox's per-arch busybox (Debian's busybox-static of that arch) extracted to
# EDGEBOT_BUSYBOX_CACHE (default /var/cache/edgebot/busybox/<arch>/busybox; read by sandbox/base_images.py).
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
qemu_setup() {
  local sudo="" bb_cache="${EDGEBOT_BUSYBOX_CACHE:-/var/cache/edgebot/busybox}" handler pair arch deb_arch tmp
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  [ -e /proc/sys/fs/binfmt_misc/register ] \
    || $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || echo "warning: cannot mount binfmt_misc (foreign-arch RUN steps will fail)" >&2
  for handler in qemu-aarch64 qemu-arm; do
    [ -e "/proc/sys/fs/binfmt_misc/$handler" ] && grep -qx enabled "/proc/sys/fs/binfmt_misc/$handler" && continue
    [ -e /proc/sys/fs/binfmt_misc/register ] && { $sudo update-binfmts --enable "$handler" >/dev/null 2>&1 \
      || echo "warning: cannot enable the $handler binfmt handler" >&2; }
  done
  for pair in arm64:arm64 arm:armhf; do
    arch="${pair%%:*}"; deb_arch="${pair##*:}"
    [ -x "$bb_cache/$arch/busybox" ] && continue
    dpkg --print-foreign-architectures | grep -qx "$deb_arch" || $sudo dpkg --add-architecture "$deb_arch"
    tmp="$(mktemp -d)"
    ( cd "$tmp" && { apt-get download -q "busybox-static:$deb_arch" >/tmp/edgebot-apt.log 2>&1 || {
        $sudo apt-get update -q >>/tmp/edgebot-apt.log 2>&1 \
          && apt-get download -q "busybox-static:$deb_arch" >>/tmp/edgebot-apt.log 2>&1; }; } \
      && dpkg-deb -x busybox-static_*.deb root ) || { tail -20 /tmp/edgebot-apt.log; rm -rf "$tmp"; return 1; }
    $sudo mkdir -p "$bb_cache/$arch" && $sudo install -m 0755 "$tmp/root/bin/busybox" "$bb_cache/$arch/busybox" \
      || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
  done
}
trap 'status=$?; [ $status -eq 0 ] && { qemu_setup || exit 1; }' EXIT
# Redis high availability: the Sentinel failover test and bench (sandbox/sentinel.py)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
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
