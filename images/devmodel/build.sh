# Runs inside a throwaway Debian build chroot (mmdebstrap --variant=buildd, customize hook).
# Builds only the Xen flavour of Debian's own qemu source package, with the one change the rules
# file has a hook for: QEMU_XEN_CONFIGURE_OPTIONS=--enable-linux-aio. Writes to /out: the binary,
# the release's qemu-system-xen .deb (repacked by the harness), and what it was built from.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get -y -q build-dep qemu
mkdir -p /build /out
cd /build
apt-get -q source qemu
apt-get -q download qemu-system-xen
cd qemu-*/
dpkg-parsechangelog -S Version > /out/source-version
QEMU_XEN_CONFIGURE_OPTIONS=--enable-linux-aio debian/rules b/xen/built
cp b/xen/qemu-system-i386 /out/xen-qemu-system-i386
cp /build/qemu-system-xen_*.deb /out/
# the package that provides the libaio the binary links (libaio1 on 12, libaio1t64 on 13)
lib=$(ldd /out/xen-qemu-system-i386 | awk '/libaio/ {print $3}')
dpkg-query -S "$(readlink -f "$lib")" | cut -d: -f1 > /out/libaio-package
