#!/bin/sh
# bootstore-prepare-root SYSROOT: in the initramfs, after the physical root
# is mounted at SYSROOT, make SYSROOT the booted deployment's root.
#
# A composefs deployment (ostree/deploy/<stateroot>/deploy/<id>.<serial>/
# holding .bootstore.cfs) is mounted as bootstore mounts it elsewhere: the
# EROFS image through a read-only loop device, then overlayfs with the image
# as the metadata layer and the unified store's layer directories as its
# data-only layer (lowerdir=META::DATA, kernel 6.5 or later), so that each
# file is read from the store's one copy. The root gets a transient upper
# layer on tmpfs (like bootc's root.transient: / is writable for the boot and
# starts clean at the next one), /usr is bound read-only on top (as ostree
# keeps it), the deployment's own etc/ is bound over /etc, and the physical
# root is moved to /sysroot inside it, as ostree-prepare-root does. /var is
# mounted later by ostree's system generator from the ostree= argument.
#
# Anything else goes to ostree-prepare-root unchanged.
set -eu
sysroot=${1:-/sysroot}

arg=
for word in $(cat /proc/cmdline); do
    case $word in ostree=*) arg=${word#ostree=} ;; esac
done
[ -n "$arg" ] || { echo "bootstore-prepare-root: no ostree= kernel argument" >&2; exit 1; }
deploy=$(realpath -e "$sysroot$arg")
case $deploy in
    "$sysroot"/ostree/deploy/*) ;;
    *) echo "bootstore-prepare-root: ostree=$arg resolves to $deploy, outside $sysroot/ostree/deploy" >&2; exit 1 ;;
esac
if [ ! -f "$deploy/.bootstore.cfs" ]; then
    exec /usr/lib/ostree/ostree-prepare-root "$sysroot"
fi

echo "bootstore-prepare-root: composefs deployment $deploy"
run=/run/bootstore/composefs
mkdir -p "$run/meta" "$run/upper" "$run/root"
# Moving mounts needs private propagation (ostree-prepare-root does alike).
mount --make-rprivate /
# Nothing else in the initramfs needs these, so udev has not loaded them.
modprobe -a -q loop erofs overlay || true
loop=$(losetup --find --show --read-only "$deploy/.bootstore.cfs")
mount -t erofs -o ro,nodev,nosuid "$loop" "$run/meta"
mount -t tmpfs -o mode=0755 bootstore-root "$run/upper"
mkdir -p "$run/upper/upper" "$run/upper/work"
opts="metacopy=on,redirect_dir=on,lowerdir=$run/meta::$sysroot/ostree/bootc/storage/overlay"
opts="$opts,upperdir=$run/upper/upper,workdir=$run/upper/work"
# Read with the shell: the initramfs need not hold grep.
verity=
while IFS= read -r line; do
    case $line in composefs-verity=true) verity=1 ;; esac
done < "$deploy.origin"
if [ -n "$verity" ]; then
    opts="$opts,verity=require"
fi
mount -t overlay -o "$opts" composefs "$run/root"
# overlayfs holds the image's mount; the loop device goes with it.
umount -l "$run/meta"
losetup -d "$loop" 2>/dev/null || true
mount --bind "$run/root/usr" "$run/root/usr"
mount -o remount,bind,ro "$run/root/usr"
mount --bind "$deploy/etc" "$run/root/etc"
mount --move "$sysroot" "$run/root/sysroot"
mount --move "$run/root" "$sysroot"
touch /run/ostree-booted
