#!/usr/bin/env bash
# Builds the keysync image here, with no container registry, and runs it: `make image-check`.
#
#   1. buildah and debootstrap from Debian's packages, when missing (we are root).
#   2. The binaries that deploy/Dockerfile ships, built on this host with cargo
#      (PROFILE=release by default; PROFILE=dev for a quicker, bigger build).
#   3. A Debian base image: debootstrap --variant=minbase of this host's Debian release
#      (the binaries link this host's glibc, so the base must not be older), trimmed like
#      debian:*-slim, imported into buildah. Cached under .deps/image/ (or
#      $KEYSYNC_DEPS_DIR/image/): the rootfs tarball, buildah's storage and its layers.
#   4. The runtime stage of deploy/Dockerfile, with BASE=that image and
#      BINARIES=host-binaries (a build context holding only bin/).
#   5. A run of the image: its configured user must be 65532:65532; then, in private
#      mount/pid/net/ipc/uts namespaces, the image's root is bind-mounted read-only and
#      every binary's --version runs in it as uid 65532 (chroot --userspec); a write
#      to / must fail with "Read-only file system", as root and as 65532 alike.
#
# Prints one line per binary, the image size, and `image-check: ok` last; exits non-zero on
# any failure. Idempotent: the container and mounts it makes are removed on exit.
#
# Environment: PROFILE (release), DEBIAN_SUITE (this host's VERSION_CODENAME),
# DEBIAN_MIRROR (http://deb.debian.org/debian), KEYSYNC_DEPS_DIR (.deps), CARGO (cargo),
# CARGO_TARGET_DIR (target).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
deps=$(realpath -m "${KEYSYNC_DEPS_DIR:-$root/.deps}")
cache=$deps/image
profile=${PROFILE:-release}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cargo=${CARGO:-cargo}
dockerfile=$root/deploy/Dockerfile
base_image=localhost/keysync-debian-base
image=localhost/keysync:check
container=keysync-image-check
started=$SECONDS

say() { printf 'image-check: %s\n' "$*"; }
die() { say "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, buildah with the vfs driver, chroot, mounts)"

# --- 1. tools ------------------------------------------------------------------------
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: chroot isolation needs no OCI runtime (runc/crun), nor fuse-overlayfs.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Project-local storage with the vfs driver: overlay is not available everywhere (nested
# in a container, say), vfs is; and nothing here touches the machine's own image store.
mkdir -p "$cache"
bah() { buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver vfs "$@"; }

# --- cleanup: the container (and its mount) left by this run or by an interrupted one ----
cleanup() {
  if bah inspect --type container "$container" >/dev/null 2>&1; then
    bah umount "$container" >/dev/null 2>&1 || true
    bah rm "$container" >/dev/null 2>&1 || true
  fi
  rm -rf "$cache/rootfs.tmp" "$cache"/*.tar.tmp
}
trap cleanup EXIT
cleanup

# --- 2. the binaries, built on this host ----------------------------------------------
# The list is the one the Dockerfile's build stage names (--bin X), so the two stay one.
mapfile -t bins < <(grep -o -- '--bin [a-z][a-z0-9-]*' "$dockerfile" | awk '{print $2}' | awk '!seen[$0]++')
[ ${#bins[@]} -gt 0 ] || die "no --bin found in $dockerfile"
case $profile in dev) outdir=debug ;; *) outdir=$profile ;; esac
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")
say "cargo build --profile $profile: ${bins[*]}"
t=$SECONDS
(cd "$root" && "$cargo" build --locked --profile "$profile" "${bins[@]/#/--bin=}")
say "binaries built in $((SECONDS - t)) s"

ctx=$cache/context
rm -rf "$ctx" && mkdir -p "$ctx/bin"
for b in "${bins[@]}"; do
  # Without the line tables the workspace's profiles keep for backtraces: about 100 MB a
  # binary with them, about 20 MB without (the build stage of the Dockerfile does the same).
  objcopy --strip-debug "$target_dir/$outdir/$b" "$ctx/bin/$b"
done

# --- 3. the Debian base ----------------------------------------------------------------
# shellcheck disable=SC1091
suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[ -n "$suite" ] || die "cannot tell this host's Debian release: set DEBIAN_SUITE (bookworm, trixie, ...)"
tarball=$cache/debian-$suite-minbase.tar
if [ ! -f "$tarball" ]; then
  say "debootstrap --variant=minbase $suite from $mirror (once; cached in $tarball)"
  t=$SECONDS
  rootfs=$cache/rootfs.tmp
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
  # Trim it as Debian's own container images (debuerreotype, *-slim) are: no package
  # cache or lists, no docs, man pages or translations, now or after later installs.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{groff,info,linda,lintian,man}/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  # No daemon may start from a package's postinst while an image is built.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d" && chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  : >"$rootfs/etc/machine-id"
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  say "base rootfs made in $((SECONDS - t)) s"
fi

# The base image is tagged with the tarball's digest, so a new tarball makes a new image
# and an unchanged one is used as it is.
tar_sum=$(sha256sum "$tarball" | cut -c1-16)
if ! bah inspect --type image "$base_image:$suite-$tar_sum" >/dev/null 2>&1; then
  say "importing $tarball as $base_image:$suite"
  c=$(bah from scratch)
  bah add --quiet "$c" "$tarball" / >/dev/null
  bah config --os linux --arch "$(dpkg --print-architecture)" --cmd /bin/bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label org.opencontainers.image.base.name="debian:$suite (debootstrap minbase)" "$c"
  bah commit --quiet --rm "$c" "$base_image:$suite-$tar_sum" >/dev/null
fi
bah tag "$base_image:$suite-$tar_sum" "$base_image:$suite"
# Base images of earlier tarballs: each is a full copy with vfs.
bah images --format '{{.Name}}:{{.Tag}}' | grep -x "$base_image:$suite-[0-9a-f]*" |
  grep -v -x "$base_image:$suite-$tar_sum" | xargs -r buildah --root "$cache/storage" \
  --runroot "$cache/run" --storage-driver vfs rmi --force >/dev/null || true

# The binaries link glibc dynamically: the base's must be at least the newest GLIBC_x.y
# symbol version they use (built on this host, they use at most the host's).
need_glibc=$(objdump -T "${bins[@]/#/$ctx/bin/}" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1 || true)
# (awk reads to the end: an early exit would kill tar with SIGPIPE, and pipefail with it.)
base_glibc=$(tar -xOf "$tarball" ./var/lib/dpkg/status | awk '
  /^Package: /{p=$2} /^Version: /{ if (p=="libc6") { v=$2; sub(/-.*/, "", v) } } END{print v}')
if [ -n "$need_glibc" ] && [ -n "$base_glibc" ]; then
  dpkg --compare-versions "$base_glibc" ge "$need_glibc" ||
    die "the binaries need glibc >= $need_glibc, the $suite base has $base_glibc: set DEBIAN_SUITE to a newer release"
  say "glibc: binaries need >= $need_glibc, base has $base_glibc"
fi

# --- 4. the runtime stage --------------------------------------------------------------
say "buildah build (runtime stage, BINARIES=host-binaries, BASE=$base_image:$suite)"
t=$SECONDS
# --layers: an unchanged base reuses the RUN layer (apt-get) and unchanged binaries the
# COPY layer. The log is kept; it is shown when the build fails.
if ! bah build --isolation chroot --layers --pull-never \
  -f "$dockerfile" --target runtime \
  --build-arg BINARIES=host-binaries --build-arg BASE="$base_image:$suite" \
  -t "$image" "$ctx" >"$cache/build.log" 2>&1; then
  tail -n 30 "$cache/build.log" >&2
  die "buildah build failed (log: $cache/build.log)"
fi
say "image built in $((SECONDS - t)) s"
# buildah 1.28 leaves the working container of a stage without instructions (`binaries`)
# behind; the storage is this script's own, so every container in it can go. Then, as vfs
# keeps a full copy per layer, drop the images that the new tag left without a name.
bah rm --all >/dev/null
bah rmi --prune >/dev/null 2>&1 || true

# --- 5. run it ---------------------------------------------------------------------------
user=$(bah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
[ "$user" = "65532:65532" ] || die "image user is '$user', want 65532:65532"

bah from --pull-never --name "$container" "$image" >/dev/null
# buildah's own runner, with the image's configuration: it runs as the image's user.
uid=$(bah run --isolation chroot "$container" -- id -u)
[ "$uid" = 65532 ] || die "buildah run: uid $uid, want 65532"
mnt=$(bah mount "$container")

# buildah run has no read-only root (no --read-only in buildah 1.28): so a private mount
# namespace binds the container's root onto itself read-only, with a fresh /proc and a
# minimal /dev, and chroot drops to 65532:65532 before each exec. Fresh pid, net (no
# network), ipc and uts namespaces, as a container has. The mounts die with the namespace.
results=$cache/run.out
# shellcheck disable=SC2016 # the script below expands its own variables
unshare --mount --propagation private --pid --fork --net --ipc --uts \
  bash -euo pipefail -c '
  mnt=$1; shift
  mount --bind "$mnt" "$mnt"
  mount -o remount,bind,ro "$mnt"
  mount -t proc -o nosuid,nodev,noexec proc "$mnt/proc"
  mount -t tmpfs -o nosuid,noexec,mode=755,size=64k tmpfs "$mnt/dev"
  for d in null zero full random urandom; do
    touch "$mnt/dev/$d" && mount --bind "/dev/$d" "$mnt/dev/$d"
  done
  # env -i: nothing of the host environment goes in; PATH as in the image config.
  inside() { env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/nonexistent "$(command -v chroot)" "$@"; }
  [ "$(inside --userspec=65532:65532 "$mnt" id -u)" = 65532 ] || { echo "FAIL uid"; exit 1; }
  status=0
  for b in "$@"; do
    out=$(inside --userspec=65532:65532 "$mnt" "/usr/local/bin/$b" --version 2>&1) && rc=0 || rc=$?
    if [ $rc -eq 0 ]; then
      printf "RESULT ok %s: %s\n" "$b" "$(printf "%s\n" "$out" | sed -n 1p)"
    else
      printf "RESULT fail %s: exit %s: %s\n" "$b" "$rc" "$(printf "%s\n" "$out" | sed -n 1,3p | tr "\n" " ")"
      status=1
    fi
  done
  # The root must be read-only as such, not just owned by root: root itself gets EROFS.
  for who in 0:0 65532:65532; do
    if err=$(inside --userspec=$who "$mnt" touch /.image-check-write 2>&1); then
      printf "RESULT fail write to / as %s succeeded\n" "$who"; status=1
    elif [[ $err == *"Read-only file system"* ]]; then
      printf "RESULT ok write to / as %s refused: Read-only file system\n" "$who"
    else
      printf "RESULT fail write to / as %s failed, but not read-only: %s\n" "$who" "$err"; status=1
    fi
  done
  exit $status
' _ "$mnt" "${bins[@]}" >"$results" 2>&1 && run_status=0 || run_status=$?

grep -v '^RESULT ' "$results" >&2 || true
failed=0
while read -r _ verdict rest; do
  printf 'image-check: %-4s %s\n' "$verdict" "$rest"
  [ "$verdict" = ok ] || failed=1
done < <(grep '^RESULT ' "$results")
[ "$(grep -c '^RESULT ok' "$results")" -eq $((${#bins[@]} + 2)) ] || failed=1

size=$(bah images --format '{{.Size}}' "$image" | awk 'NR==1')
files=$(du -sh --apparent-size "$mnt" | cut -f1)
say "image $image: $size ($files of files; ${#bins[@]} binaries, profile $profile, base debian $suite minbase)"
say "done in $((SECONDS - started)) s"
if [ "$failed" -ne 0 ] || [ "$run_status" -ne 0 ]; then
  die "see the lines above"
fi
echo "image-check: ok"
