#!/usr/bin/env bash
# Prepares the VM tests' guest: Debian's kernel and modules (tests/guest/prepare.sh,
# cached in CACHE and shared with the cgroup v2 guest tests), then `tarn vm setup` writes
# OUT/vmlinux and OUT/initrd.cpio with this build's tarn-agent.
#
#   tests/vm/setup.sh TARN CACHE OUT
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 TARN CACHE OUT" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
"$here/../guest/prepare.sh" "$2"
"$1" vm setup --from "$2" --dir "$3"
