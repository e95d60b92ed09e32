#!/usr/bin/env bash
# Prepares everything the cgroup v2 guest needs, once, into OUTDIR:
#
#   tests/guest/prepare.sh OUTDIR
#
#   OUTDIR/vmlinux          Debian 12's kernel as an uncompressed ELF (it has a PVH entry
#                           note, so QEMU boots it directly: ~4 s faster under TCG than
#                           the bzImage)
#   OUTDIR/modules/*.ko     the uncompressed modules the guest loads (virtio-mmio, 9p,
#                           virtio-fs and fuse, brd), and
#   OUTDIR/modules/order    their file names in load (dependency) order
#   OUTDIR/modules/kvm/     kvm and kvm_amd with their dependencies and their own order
#                           file: only the nested-KVM test loads them (an outer guest
#                           with emulated AMD SVM), so they stay out of modules/order
#   OUTDIR/kernel-version   e.g. 6.1.0-56-amd64
#
# Host tools (qemu-system-x86, busybox-static, cpio, xz-utils, zstd, kmod) are installed
# with apt-get when missing. A second run with everything in place does nothing but print
# the paths (in about 0.2 s); TARN_GUEST_REFRESH=1 makes it look for a newer kernel.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "prepare: $*" >&2; }

# --- host tools ---------------------------------------------------------------------
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in qemu-system-x86 busybox-static cpio xz-utils zstd kmod; do
    have_pkg "$p" || need+=("$p")
done
apt_updated=0
apt_update() {
    if [ $apt_updated -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
}
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- kernel package -----------------------------------------------------------------
# linux-image-amd64 is a metapackage; its dependency names the real image package. A
# prepared kernel is kept (tests should not change kernels under anyone's feet, and the
# look-up costs a second): TARN_GUEST_REFRESH=1 looks again and picks up a newer one.
kpkg_name() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
kpkg=""
if [ -s "$out/kernel-version" ] && [ "${TARN_GUEST_REFRESH:-0}" != 1 ]; then
    kpkg=linux-image-$(cat "$out/kernel-version")
fi
[ -n "$kpkg" ] || kpkg=$(kpkg_name)
if [ -z "$kpkg" ]; then
    apt_update
    kpkg=$(kpkg_name)
fi
if [ -z "$kpkg" ] && [ -s "$out/kernel-version" ]; then
    kpkg=linux-image-$(cat "$out/kernel-version")   # offline: keep what is cached
fi
[ -n "$kpkg" ] || { echo "$0: cannot find the kernel package behind linux-image-amd64" >&2; exit 1; }
kver=${kpkg#linux-image-}

need_base=1 need_kvm=1
if [ -f "$out/kernel-version" ] && [ "$(cat "$out/kernel-version")" = "$kver" ] &&
   [ -s "$out/vmlinux" ] && [ -s "$out/modules/order" ] &&
   grep -qx virtiofs.ko "$out/modules/order"; then
    # (A cache made before the VM mode's virtio-fs root lacks virtiofs.ko: the base set
    # is made again.)
    need_base=0
    # A cache made before the kvm set existed gets just that set added.
    [ -s "$out/modules/kvm/order" ] && need_kvm=0
fi
if [ $need_base -eq 0 ] && [ $need_kvm -eq 0 ]; then
    log "cached: $kver"
else
    log "preparing kernel $kver$([ $need_base -eq 0 ] && echo ' (kvm modules only)')"
    work=$(mktemp -d "$out/.work.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    deb=$(find "$out" -maxdepth 1 -name "${kpkg}_*.deb" | head -n1)
    if [ -z "$deb" ]; then
        (cd "$work" && apt-get download -qq "$kpkg" 2>/dev/null) || {
            apt_update
            (cd "$work" && apt-get download -qq "$kpkg")
        }
        rm -f "$out"/linux-image-*.deb
        mv "$work"/"${kpkg}"_*.deb "$out"/
        deb=$(find "$out" -maxdepth 1 -name "${kpkg}_*.deb" | head -n1)
    fi
    dpkg -x "$deb" "$work/root"
    vmlinuz="$work/root/boot/vmlinuz-$kver"
    [ -f "$vmlinuz" ] || { echo "$0: $vmlinuz not in $deb" >&2; exit 1; }

    # vmlinuz is a bzImage: setup code + decompressor + the compressed ELF. Find the
    # payload by its magic and decompress it; stop at the first candidate that yields an
    # ELF (the magic can also occur by chance earlier in the decompressor).
    extract_vmlinux() {
        local img=$1 dst=$2 magic tool off
        for pair in 'fd377a585a00:xz -dc --single-stream' '28b52ffd:zstd -dcq' \
                    '1f8b0800:gzip -dcq' '02214c18:lz4 -dc'; do
            magic=${pair%%:*}; tool=${pair#*:}
            # grep -obUaP prints byte offsets of each match of the binary pattern.
            local pat
            pat=$(printf '%s' "$magic" | sed 's/../\\x&/g')
            for off in $(LC_ALL=C grep -obUaP "$pat" "$img" 2>/dev/null | cut -d: -f1 | head -n 5); do
                tail -c +$((off + 1)) "$img" | $tool > "$dst" 2>/dev/null || true
                if [ "$(head -c 4 "$dst" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
                    return 0
                fi
            done
        done
        return 1
    }

    # Modules: the named ones plus everything they depend on (modules.dep), copied
    # uncompressed into a directory whose `order` file lists each after its dependencies.
    # The package ships no modules.dep (the postinst runs depmod): make one in the tree.
    moddir="$work/root/lib/modules/$kver"
    [ -f "$moddir/modules.dep" ] || /sbin/depmod -b "$work/root" "$kver"
    declare -A path_of=()
    while IFS= read -r line; do
        mod=${line%%:*}
        base=$(basename "$mod"); base=${base%%.ko*}
        path_of[${base//-/_}]=$mod
    done < "$moddir/modules.dep"
    deps_of() { grep -m1 "^${path_of[$1]}:" "$moddir/modules.dep" | cut -d: -f2; }
    declare -A seen=()
    order=()
    visit() {
        local name=${1//-/_} d b
        [ -n "${seen[$name]:-}" ] && return 0
        seen[$name]=1
        if [ -z "${path_of[$name]:-}" ]; then
            if grep -q "/$name.ko$" "$moddir/modules.builtin" 2>/dev/null; then
                return 0       # built into the kernel: nothing to load
            fi
            log "module $name is not in $kver (the guest will skip what needs it)"
            return 0
        fi
        for d in $(deps_of "$name"); do
            b=$(basename "$d"); b=${b%%.ko*}
            visit "$b"
        done
        order+=("$name")
    }
    copy_modules() {   # DST MODULE...
        local dst=$1 m name src
        shift
        seen=() order=()
        for m in "$@"; do visit "$m"; done
        mkdir -p "$dst"
        : > "$dst/order"
        for name in "${order[@]}"; do
            src="$moddir/${path_of[$name]}"
            case "$src" in
                *.ko.xz)  xz -dc "$src" ;;
                *.ko.zst) zstd -dcq "$src" ;;
                *.ko.gz)  gzip -dc "$src" ;;
                *)        cat "$src" ;;
            esac > "$dst/$name.ko"
            echo "$name.ko" >> "$dst/order"
        done
    }

    if [ $need_base -eq 1 ]; then
        extract_vmlinux "$vmlinuz" "$work/vmlinux" ||
            { echo "$0: no compressed ELF payload found in $vmlinuz" >&2; exit 1; }
        copy_modules "$work/modules" virtio_mmio 9pnet_virtio 9p virtiofs brd
    fi
    # kvm_amd (AMD SVM, which QEMU's TCG emulates with -cpu max) and what it needs
    # (kvm, irqbypass, ccp). kvm_intel is left out: TCG does not emulate VMX.
    copy_modules "$work/modules/kvm" kvm_amd

    if [ $need_base -eq 1 ]; then
        rm -rf "$out/modules" "$out/vmlinux"
        mv "$work/modules" "$out/modules"
        mv "$work/vmlinux" "$out/vmlinux"
        echo "$kver" > "$out/kernel-version"
    else
        # Only the kvm set is new: the base modules may be in use by a guest being built.
        rm -rf "$out/modules/kvm"
        mv "$work/modules/kvm" "$out/modules/kvm"
    fi
    rm -rf "$work" "$deb"
    trap - EXIT
fi

echo "vmlinux: $out/vmlinux"
echo "modules: $out/modules ($(tr '\n' ' ' < "$out/modules/order"))"
echo "kvm modules: $out/modules/kvm ($(tr '\n' ' ' < "$out/modules/kvm/order" 2>/dev/null))"
echo "kernel: $(cat "$out/kernel-version")"
