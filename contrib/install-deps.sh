#!/usr/bin/env bash
# Installs the Debian packages bootstore's tests, demo and benchmarks need.
# Idempotent: does nothing when every command is already present.
set -euo pipefail
need=()
for pair in docker-registry:docker-registry podman:podman skopeo:skopeo runc:runc \
            mkfs.xfs:xfsprogs ostree:ostree systemd-analyze:systemd \
            go-md2man:go-md2man man:man-db fsck.erofs:erofs-utils \
            sgdisk:gdisk mkfs.vfat:dosfstools grub-mkimage:grub-pc-bin \
            qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap ip:iproute2 \
            gpg:gnupg; do
  cmd=${pair%%:*} pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: need root to apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${need[@]}" uidmap iptables containernetworking-plugins
# The registry package starts a system instance on :5000; the tests start their own.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
