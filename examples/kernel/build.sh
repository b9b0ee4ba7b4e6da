#!/bin/bash
# Build a Xen PV domU kernel from Debian's linux source package, twice in one tree: as Debian ships
# the source (the control, copied to OUT/stock/bzImage), then with a patch applied (the tree's own
# arch/x86/boot/bzImage). Both boot as xdh's domU kernel with no initramfs:
#
#   examples/kernel/build.sh /work/kbuild                      # bookworm, blkfront-flush-error.patch
#   xdh reproduce RUN/iterations/iter-N --rerun --domu-kernel /work/kbuild/stock/bzImage
#   xdh reproduce RUN/iterations/iter-N --rerun --domu-kernel /work/kbuild/linux-VERSION
#
# Options: --release bookworm|trixie (the suite whose source is fetched; default bookworm),
# --version V (default: the newest the mirror serves), --patch FILE (default: the blkfront patch
# beside this script; --patch none builds the stock kernel only), --mirror URL, --jobs N.
# The config: x86_64_defconfig + xen.config, with what the domU needs to reach its root, its network
# and xdh's flush ledger built in (no modules are installed in the domU), and graphics, sound,
# wireless and USB left out. Needs: build-essential bc flex bison libelf-dev libssl-dev dpkg-dev
# (installed with apt-get when run as root). Not part of CI: 17 min on 2 cores (measured, 2026-12-06).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
RELEASE=bookworm VERSION="" PATCH="$HERE/blkfront-flush-error.patch" MIRROR=http://deb.debian.org/debian
JOBS=$(nproc)
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
need() { [ $# -ge 2 ] || { echo "build.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --release) need "$@"; RELEASE=$2; shift 2 ;;
        --version) need "$@"; VERSION=$2; shift 2 ;;
        --patch) need "$@"; PATCH=$2; shift 2 ;;
        --mirror) need "$@"; MIRROR=$2; shift 2 ;;
        --jobs) need "$@"; JOBS=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        -*) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "build.sh: give one output directory (see --help)" >&2; exit 2; }
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
[ "$PATCH" = none ] || [ -r "$PATCH" ] || { echo "build.sh: no patch file $PATCH" >&2; exit 2; }
[ "$PATCH" = none ] || PATCH=$(cd "$(dirname "$PATCH")" && pwd)/$(basename "$PATCH")
say() { echo "[$(date +%H:%M:%S)] $*"; }
T0=$(date +%s)

# --- tools --------------------------------------------------------------------------------------
NEED=(build-essential bc flex bison libelf-dev libssl-dev dpkg-dev)
MISSING=()
for p in "${NEED[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || MISSING+=("$p"); done
if [ ${#MISSING[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        say "installing ${MISSING[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${MISSING[@]}" >/dev/null
    else
        echo "build.sh: missing ${MISSING[*]}: sudo apt-get install ${MISSING[*]}" >&2; exit 2
    fi
fi

# --- Debian's source, with a private apt state (the host's apt is not touched) ------------------
APT="$OUT/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$OUT/src"
SECURITY=${MIRROR%/debian}/debian-security
cat > "$APT/sources.list" <<EOF
deb-src $MIRROR $RELEASE main
deb-src $MIRROR $RELEASE-updates main
deb-src $SECURITY $RELEASE-security main
EOF
AO=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o Debug::NoLocking=1)
say "apt: the $RELEASE source indexes"
apt-get "${AO[@]}" -q update >/dev/null
if [ -n "$VERSION" ]; then
    CANDIDATES=("$VERSION")
else   # the newest first; a mirror may list a version whose files it does not serve (a security pool)
    mapfile -t CANDIDATES < <(apt-cache "${AO[@]}" showsrc linux | awk '/^Package: linux$/{p=1} p&&/^Version:/{print $2; p=0}' | sort -Vru)
fi
GOT=""
for v in "${CANDIDATES[@]}"; do
    if [ -f "$OUT/src/linux_$v.dsc" ] || (cd "$OUT/src" && apt-get "${AO[@]}" -q source --download-only "linux=$v" >/dev/null 2>&1); then
        GOT=$v; break
    fi
    say "linux $v: its source is not served by $MIRROR; trying the next"
done
[ -n "$GOT" ] || { echo "build.sh: no linux source of $RELEASE could be fetched (tried: ${CANDIDATES[*]:0:5})" >&2; exit 5; }
UPSTREAM=${GOT%-*}
TREE="$OUT/linux-$UPSTREAM"
say "linux $GOT (Debian's source package, $RELEASE): $TREE"
if [ ! -f "$TREE/Makefile" ] || [ "$(cat "$TREE/.xdh-debian-version" 2>/dev/null)" != "$GOT" ]; then
    rm -rf "$TREE"
    (cd "$OUT/src" && dpkg-source -q -x "linux_$GOT.dsc" "$TREE" >/dev/null)   # Debian's patches applied
    echo "$GOT" > "$TREE/.xdh-debian-version"
fi
echo "$GOT" > "$OUT/debian-version"

# --- config ---------------------------------------------------------------------------------------
cd "$TREE"
if [ -f .xdh-patched ]; then    # a tree patched by an earlier run: back to the source as shipped
    patch -s -R -p1 < .xdh-patched || { echo "build.sh: could not take .xdh-patched out of $TREE: remove the tree" >&2; exit 5; }
    rm .xdh-patched
fi
say "config: x86_64_defconfig + xen.config + the domU's needs"
make -s x86_64_defconfig xen.config >/dev/null
C() { scripts/config --file .config "$@"; }
# the domU's root, network and console, built in (no initramfs, no modules in its /lib/modules)
C -e XEN -e XEN_PV -e XEN_BLKDEV_FRONTEND -e XEN_NETDEV_FRONTEND -e HVC_XEN -e HVC_XEN_FRONTEND \
  -e EXT4_FS -e EXT4_USE_FOR_EXT2 -e JBD2 -e DEVTMPFS -e DEVTMPFS_MOUNT -e TMPFS -e TMPFS_POSIX_ACL \
  -e AUTOFS_FS -e UNIX -e INET -e PACKET -e BRIDGE -e CGROUPS -e MEMCG -e FHANDLE -e BLK_DEV_DM
# what xdh reads in the domU: block tracepoints (the flush ledger), /proc/config.gz for a look
C -e FTRACE -e BLK_DEV_IO_TRACE -e IKCONFIG -e IKCONFIG_PROC
# not needed in a PV domU: less to build
C -d DRM -d SOUND -d WLAN -d WIRELESS -d CFG80211 -d MAC80211 -d USB_SUPPORT -d AGP -d BT \
  -d DEBUG_INFO -d DEBUG_INFO_BTF -d DEBUG_INFO_DWARF5 -d DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT \
  -d MODULE_SIG -d SYSTEM_TRUSTED_KEYRING -d LOCALVERSION_AUTO
C --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS "" --set-str LOCALVERSION "-xdh"
make -s olddefconfig
for opt in XEN_PV XEN_BLKDEV_FRONTEND XEN_NETDEV_FRONTEND HVC_XEN EXT4_FS DEVTMPFS BLK_DEV_IO_TRACE; do
    grep -q "^CONFIG_$opt=y" .config || { echo "build.sh: CONFIG_$opt is not built in after olddefconfig" >&2; exit 5; }
done

build() {   # $1: the release suffix
    say "make bzImage (-j$JOBS, release $(make -s kernelversion)-xdh$1)"
    local t
    t=$(date +%s)
    make -s -j"$JOBS" LOCALVERSION="$1" bzImage
    say "built $(make -s LOCALVERSION="$1" kernelrelease) in $(( $(date +%s) - t )) s"
}

# --- the stock build, then the patched one in the same tree ---------------------------------------
build -stock
mkdir -p "$OUT/stock"
cp arch/x86/boot/bzImage .config "$OUT/stock/"
if [ "$PATCH" != none ]; then
    say "patch: $(basename "$PATCH")"
    patch -s -p1 --dry-run < "$PATCH" >/dev/null || { echo "build.sh: $PATCH does not apply to linux $GOT" >&2; exit 5; }
    cp "$PATCH" .xdh-patched        # before applying: a run stopped in between still knows to take it out
    patch -s -p1 < "$PATCH"
    build -patched
    mkdir -p "$OUT/patched"
    cp arch/x86/boot/bzImage .config "$OUT/patched/"
fi
say "done in $(( $(date +%s) - T0 )) s:"
echo "  stock:   $OUT/stock/bzImage ($(cd "$TREE" && make -s LOCALVERSION=-stock kernelrelease))"
[ "$PATCH" = none ] || echo "  patched: $TREE (its arch/x86/boot/bzImage, also $OUT/patched/bzImage: $(make -s LOCALVERSION=-patched kernelrelease))"
