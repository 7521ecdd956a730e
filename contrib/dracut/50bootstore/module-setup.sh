#!/bin/bash
# dracut module: boots bootstore's composefs deployments. It wraps ostree's
# ostree-prepare-root (module 98ostree): for a deployment directory that
# holds a composefs image (.bootstore.cfs) it mounts the image over the
# unified store's layer files instead; any other deployment goes to
# ostree-prepare-root unchanged. Install to
# /usr/lib/dracut/modules.d/50bootstore and add "bootstore" to
# add_dracutmodules (see docs/booting.md).

check() {
    [[ -x /usr/lib/ostree/ostree-prepare-root ]] || return 1
    return 255
}

depends() {
    echo ostree
    return 0
}

installkernel() {
    hostonly='' instmods erofs overlay loop
}

install() {
    inst_script "$moddir/bootstore-prepare-root.sh" /usr/lib/bootstore/bootstore-prepare-root
    inst_multiple losetup modprobe mount umount mkdir realpath touch
    inst_simple "$moddir/ostree-prepare-root-bootstore.conf" \
        "${systemdsystemunitdir}/ostree-prepare-root.service.d/bootstore.conf"
}
