#!/usr/bin/env bash
# The images docker-compose.yml needs, for the compose test (tests/test_compose_stack.py), on a
# machine that reaches Debian's mirror and PyPI but no container registry: the two upstream
# images it names are stood in for by images built here from Debian's packages and tagged with
# the upstream names, so that neither the Dockerfile nor the compose file changes for the test.
# Then the project's own image is built from its Dockerfile, so that the test's `up` finds its
# layers cached. The stand-ins are built only when missing (`--rebuild`: again).
#
#   CONTAINERS_CONF=tests/compose/containers.conf bash tests/compose/images.sh
#
# Podman reads its settings from $CONTAINERS_CONF (this script sets it when unset): the engine
# needs runc and lower limits on this kind of machine (containers.conf says why).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

# The names the Dockerfile's FROM and the compose file's `image:` use (tests/test_compose.py
# checks that they still do).
readonly PYTHON_IMAGE=docker.io/library/python:3.11-slim
readonly REDIS_IMAGE=docker.io/library/redis:7-alpine
# The Debian both stand-ins are built on: bookworm's minimal base, imported from a debootstrap.
readonly DEBIAN_IMAGE=localhost/jobcache-stand-in/debian:bookworm
# The project's image, built every time (from the layer cache it takes seconds) so that the
# cache holds the current code's layers: the compose project's own tags (<project>_api, ...)
# are built from them.
readonly PROJECT_IMAGE=localhost/jobcache:compose-test

rebuild=false
[ "${1:-}" = --rebuild ] && rebuild=true

missing() {
  $rebuild || ! podman image exists "$1"
}

# The Debian mirror apt already uses on this machine: its sources name it, not this repo.
debian_mirror() {
  local codename
  codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
  apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' |
    awk -v suite="$codename" '$1 == suite { print $2; exit }'
}

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

if missing "$DEBIAN_IMAGE"; then
  mirror="$(debian_mirror)"
  if [ -z "$mirror" ]; then
    echo "images.sh: no Debian mirror for bookworm in apt's sources" >&2
    exit 1
  fi
  echo "images.sh: debootstrap bookworm (minbase) from apt's mirror" >&2
  debootstrap --variant=minbase bookworm "$workdir/rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$workdir/debootstrap.log" >&2
    exit 1
  }
  # No service starts while a package is installed in a build (Debian's policy-rc.d protocol).
  printf '#!/bin/sh\nexit 101\n' >"$workdir/rootfs/usr/sbin/policy-rc.d"
  chmod +x "$workdir/rootfs/usr/sbin/policy-rc.d"
  rm -rf "$workdir/rootfs/var/cache/apt/archives/"*.deb "$workdir/rootfs/var/lib/apt/lists/"*
  tar -C "$workdir/rootfs" -c . | podman import --quiet - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$workdir/rootfs"
fi

# Each stand-in is built from its Containerfile here, in a context of its own.
build_stand_in() {
  local image="$1" containerfile="$2"
  shift 2
  local context="$workdir/context-${containerfile%.Containerfile}"
  mkdir -p "$context"
  cp "$here/$containerfile" "$@" "$context/"
  echo "images.sh: building $image" >&2
  podman build --quiet --pull=never --build-arg "BASE=$DEBIAN_IMAGE" \
    -f "$context/$containerfile" -t "$image" "$context" >/dev/null
}

if missing "$PYTHON_IMAGE"; then
  # pip in the project's build reaches PyPI through this machine's network, which needs the
  # certificate authorities this machine trusts.
  build_stand_in "$PYTHON_IMAGE" python.Containerfile /etc/ssl/certs/ca-certificates.crt
fi
if missing "$REDIS_IMAGE"; then
  build_stand_in "$REDIS_IMAGE" redis.Containerfile "$here/redis-entrypoint.sh"
fi
echo "images.sh: building $PROJECT_IMAGE from the Dockerfile" >&2
previous="$(podman image inspect --format '{{.Id}}' "$PROJECT_IMAGE" 2>/dev/null || true)"
podman build --quiet --pull=never -t "$PROJECT_IMAGE" "$root" >/dev/null
# The build it replaces, untagged now, would otherwise stay on disk run after run.
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$PROJECT_IMAGE")" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
