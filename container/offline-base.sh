#!/usr/bin/env bash
# Make the Dockerfile's base image (python:PYTHON-slim-RELEASE) available to podman on a machine that reaches no
# container registry: pull it when a registry answers; otherwise build a stand-in from Debian packages with
# debootstrap (Debian's python3, pip, venv and CA certificates) and import it under the name the Dockerfile's FROM
# resolves to, so `podman build --pull=never` finds it. Needs root, debootstrap and podman (make image-tools).
#
#   container/offline-base.sh [PYTHON_VERSION] [DEBIAN_RELEASE] [ARCH]     e.g. 3.11 bookworm amd64
set -euo pipefail

python_version=${1:-3.11}
release=${2:-bookworm}
arch=${3:-$(dpkg --print-architecture)}
# Docker Hub's `library/` namespace: what `FROM python:…` means to podman with no registry configured.
name="docker.io/library/python:${python_version}-slim-${release}"
# One local name cannot hold two architectures: each stand-in is also kept under a name of its own, and the public
# name is pointed at the one a build asks for (a tag, not a rebuild).
private="localhost/scaler-batch-base:${python_version}-slim-${release}-${arch}"
platform="linux/${arch}"
podman=(podman --runtime runc)

# One build at a time on a machine (container/build_image.py holds this lock and says so when it runs this script).
if [ -z "${SCALER_BATCH_IMAGE_LOCK_HELD:-}" ]; then
    exec 9>>/tmp/scaler-batch-image-build.lock
    flock 9
fi

have_image() {
    local found
    found=$("${podman[@]}" image inspect --format '{{.Architecture}}' "$name" 2>/dev/null) || return 1
    [ "$found" = "$arch" ]
}

if have_image; then
    echo "base image $name ($arch) is present"
    exit 0
fi
if "${podman[@]}" image exists "$private"; then
    "${podman[@]}" tag "$private" "$name"
    echo "base image $name ($arch): the stand-in built before"
    exit 0
fi
# A registry that answers wins: the real image is what `cdk deploy` builds on.
if timeout 120 "${podman[@]}" pull -q --platform "$platform" "$name" >/dev/null 2>&1; then
    echo "base image $name ($arch) pulled"
    exit 0
fi

# Debian's own python3 must be the version the image promises: the runner refuses a payload from another minor.
case "$release" in
    bookworm) debian_python=3.11 ;;
    trixie) debian_python=3.13 ;;
    *) debian_python=unknown ;;
esac
if [ "$debian_python" != "$python_version" ]; then
    echo "no container registry answered, and Debian $release ships Python $debian_python, not $python_version:" >&2
    echo "build with PYTHON_VERSION=$debian_python, or on a machine that reaches a registry" >&2
    exit 1
fi

# The mirror apt already uses on this machine (deb822 sources first, then the one-line format).
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "no Debian mirror found in apt's sources" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/scaler-batch-base.XXXXXX)
cleanup() {
    # debootstrap mounts /proc and /sys inside the root; an interrupted run leaves them there: unmount first, and
    # never let rm cross into another filesystem.
    { grep -o " $rootfs/[^ ]*" /proc/mounts || true; } | sort -r | while read -r mounted; do umount -l "$mounted" || true; done
    rm -rf --one-file-system "$rootfs"
    rm -f "${log:-}"
}
trap cleanup EXIT
trap "exit 143" INT TERM  # through the EXIT trap
echo "no container registry answered: building $name ($arch) from Debian $release with debootstrap"
foreign=()
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    foreign=(--foreign)  # the second stage runs under qemu-user-static, below
fi
log=$(mktemp /var/tmp/scaler-batch-base-log.XXXXXX)
bootstrap() {
    debootstrap "${foreign[@]}" --arch "$arch" --variant=minbase \
        --include=python3,python3-pip,python3-venv,ca-certificates,passwd "$release" "$rootfs" "$mirror" &&
        if [ "${#foreign[@]}" -gt 0 ]; then chroot "$rootfs" /debootstrap/debootstrap --second-stage; fi
}
# A mirror's hiccup fails a download: one more try from an empty root before giving up, with debootstrap's words.
if ! bootstrap >"$log" 2>&1; then
    echo "debootstrap failed once; trying again" >&2
    cleanup && mkdir -p "$rootfs"
    if ! bootstrap >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        echo "debootstrap of Debian $release ($arch) from $mirror failed (its last lines above)" >&2
        exit 1
    fi
fi
rm -f "$log"
# What python:X-slim offers and Debian's python3 does not: `python`, and pip allowed to install system-wide.
ln -sf python3 "$rootfs/usr/bin/python"
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
# HTTPS from some build hosts goes through an intercepting proxy whose CA only the host's bundle holds.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | "${podman[@]}" import -q --arch "$arch" --change 'CMD ["python3"]' - "$private" >/dev/null
"${podman[@]}" tag "$private" "$name"
echo "base image $name ($arch) built: $("${podman[@]}" image inspect --format '{{.Size}}' "$name") bytes"
