#!/bin/sh
# Builds a minimal OCI bundle: a busybox-static rootfs with applet links, /etc/passwd
# and /etc/group, and a config.json from `tarn spec` running the given command
# without a terminal.
#
#   bundles/busybox-bundle.sh DIR [TARN] [-- CMD ARGS...]
#
# DIR is created (an existing DIR/rootfs is rebuilt). TARN defaults to `tarn` on PATH.
set -eu

usage() { echo "usage: $0 DIR [TARN] [-- CMD ARGS...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
tarn=tarn
if [ $# -ge 1 ] && [ "$1" != "--" ]; then tarn=$1; shift; fi
[ $# -ge 1 ] && [ "$1" = "--" ] && shift
[ $# -ge 1 ] || set -- sh -c 'echo "hello from $(hostname), pid $$ in its own namespaces"; cat /proc/self/status | grep -E "^(Uid|CapEff)"'

busybox=/bin/busybox
[ -x "$busybox" ] || { echo "$0: $busybox not found: apt-get install busybox-static" >&2; exit 1; }
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q "statically linked"; then
    echo "$0: $busybox is not static: apt-get install busybox-static" >&2; exit 1
fi

mkdir -p "$dir"
rootfs="$dir/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/etc" \
    "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/root" "$rootfs/var" "$rootfs/run"
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
GROUP
echo "nameserver 127.0.0.1" > "$rootfs/etc/resolv.conf"
: > "$rootfs/etc/hosts"

rm -f "$dir/config.json"
"$tarn" spec --bundle "$dir"

# The command as a JSON array of strings (quotes and backslashes escaped).
args=""
for a in "$@"; do
    esc=$(printf '%s' "$a" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
    args="$args${args:+, }\"$esc\""
done
tmp="$dir/config.json.tmp"
sed -e 's/"terminal": true/"terminal": false/' \
    -e "s|^\\( *\\)\"sh\"\$|\\1$(printf '%s' "$args" | sed -e 's/[\\|&]/\\&/g')|" \
    "$dir/config.json" > "$tmp"
mv "$tmp" "$dir/config.json"
echo "bundle ready: $dir"
