#!/usr/bin/env bash
# `make demo`: a real sync from a seeded Keycloak into the emulated Jira, Confluence and
# Bitbucket, with every keysync service running as its own process. It installs what it
# needs, starts everything on free ports, runs a simulated sync and shows what would
# change, runs the real sync with progress, shows the run, shows that a second sync
# changes nothing, and stops everything it started. Logs stay in the printed folder.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
deploy/local/deps.sh
set -a
# shellcheck disable=SC1091
source "${KEYSYNC_DEPS_DIR:-$root/.deps}/env"
set +a

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "Building keysync"
cargo build --quiet --bin fetcher --bin planner --bin applier --bin control-plane --bin keysync --bin emulator
bin=$root/target/debug

work=$(mktemp -d /tmp/keysync-demo.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
groups=()
cleanup() {
  status=$?
  for group in "${groups[@]}"; do kill -TERM -- "-$group" 2>/dev/null || true; done
  sleep 1
  for group in "${groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    echo "demo failed; logs are in $logs:" >&2
    tail -n 20 "$logs"/*.log >&2 || true
  else
    echo "Stopped everything. Logs: $logs"
  fi
}
trap cleanup EXIT

# Starts a process in its own process group (so it and its children stop together).
start() {
  local name=$1
  shift
  setsid "$@" >"$logs/$name.log" 2>&1 &
  groups+=("$!")
}
# N distinct free ports: every socket stays bound until all are chosen, so two services
# never get the same port (one call per port could, and did: Confluence and Bitbucket).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}
wait_for() { # name, command...
  local name=$1 deadline=$((SECONDS + 240))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -gt $deadline ]; then echo "$name did not come up" >&2; return 1; fi
    sleep 0.5
  done
}

read -r nats_port kc_port kc_mgmt cp_port jira_port confluence_port bitbucket_port < <(free_ports 7)
# Hex: a secret passed as an argument must never begin with `-`, which token_urlsafe can.
secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
# Secret files readable by their owner only, as keysync expects of a secret mount.
(umask 077; for name in api-token service-token kc-secret kc-admin product-token bitbucket-password; do secret >"$work/$name"; done)

step "Starting nats-server, Keycloak and the three product emulators"
start nats "$KEYSYNC_NATS_SERVER" -js -a 127.0.0.1 -p "$nats_port" -sd "$work/jetstream"
start keycloak env JAVA_HOME="$KEYSYNC_JAVA_HOME" KC_BOOTSTRAP_ADMIN_USERNAME=admin \
  KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat "$work/kc-admin")" \
  "$KEYSYNC_KEYCLOAK_HOME/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$kc_port" \
  --http-management-port="$kc_mgmt" --db=dev-mem

cat >"$work/jira-seed.json" <<JSON
{"accounts": [
  {"login": "admin", "display_name": "Jira Administrator", "email": "admin@example.org"},
  {"login": "build-bot", "display_name": "Build Bot", "email": "ci@example.org"},
  {"login": "alice.smith", "display_name": "Alice Smith (since 2019)", "email": "alice.smith@example.org"}
 ],
 "groups": [{"name": "jira-software-users"}],
 "memberships": [{"group": "jira-software-users", "login": "alice.smith"}]}
JSON
echo '{"accounts": [{"login": "admin", "display_name": "Bitbucket Admin", "email": "admin@example.org"}]}' >"$work/bitbucket-seed.json"
token=$(cat "$work/product-token")
start jira "$bin/emulator" --product jira --port "$jira_port" --token "$token" --seed-file "$work/jira-seed.json"
start confluence "$bin/emulator" --product confluence --port "$confluence_port" --token "$token"
# Bitbucket refuses HTTP access tokens on its admin endpoints (BSERV-10482): Basic auth.
start bitbucket "$bin/emulator" --product bitbucket --port "$bitbucket_port" --token "$token" \
  --user admin --password "$(cat "$work/bitbucket-password")" --seed-file "$work/bitbucket-seed.json"

wait_for keycloak curl -sf "http://127.0.0.1:$kc_port/realms/master"
python3 deploy/local/demo_keycloak.py "http://127.0.0.1:$kc_port" "$(cat "$work/kc-admin")" "$(cat "$work/kc-secret")"

cat >"$work/keysync.toml" <<TOML
# The demo's configuration: every key not set here keeps its default
# (see deploy/keysync.example.toml).
[bus]
nats_url = "nats://127.0.0.1:$nats_port"
prefix = "demo"

[control_plane]
listen = "127.0.0.1:$cp_port"
endpoint = "http://127.0.0.1:$cp_port"
token_file = "$work/api-token"
service_token_file = "$work/service-token"   # the planner's and the appliers': GetRun, ReportResults

[control_plane.schedule]
enabled = false

[keycloak.demo]
endpoint = "http://127.0.0.1:$kc_port"
realm = "demo"
client_id = "keysync"
client_secret_file = "$work/kc-secret"

[products.jira]
endpoint = "http://127.0.0.1:$jira_port"
token_file = "$work/product-token"

[products.confluence]
endpoint = "http://127.0.0.1:$confluence_port"
token_file = "$work/product-token"

[products.bitbucket]
endpoint = "http://127.0.0.1:$bitbucket_port"
user = "admin"
password_file = "$work/bitbucket-password"
TOML

step "Starting the keysync services (config: $work/keysync.toml)"
"$bin/keysync" config check "$work/keysync.toml"
config=(--config "$work/keysync.toml")
start control-plane "$bin/control-plane" "${config[@]}"
start fetcher "$bin/fetcher" "${config[@]}"
start planner "$bin/planner" "${config[@]}"
for product in jira confluence bitbucket; do
  start "applier-$product" "$bin/applier" --product "$product" "${config[@]}"
done
keysync=("$bin/keysync" --endpoint "http://127.0.0.1:$cp_port" --token-file "$work/api-token")
wait_for control-plane "${keysync[@]}" runs

latest_run() { "${keysync[@]}" --json runs --limit 1 | python3 -c 'import json,sys; runs=json.load(sys.stdin); print((runs if isinstance(runs, list) else runs["runs"])[0]["id"])'; }

step "keysync test-connection"
"${keysync[@]}" test-connection

step "keysync sync --simulate   (fetch and plan for real, write nothing)"
"${keysync[@]}" sync --simulate
simulated=$(latest_run)
step "What it would do to Jira's existing accounts (keysync run $simulated --changes --product jira --op ...)"
"${keysync[@]}" run "$simulated" --changes --product jira --op link_user | sed -n '/^USER/,$p'
"${keysync[@]}" run "$simulated" --changes --product jira --op update_user | sed -n '/^USER/,$p'
step "And the first new accounts it would create"
"${keysync[@]}" run "$simulated" --changes --product jira --op create_user | awk '/^USER/ {show = 1} show && shown++ < 8'

jira_writes() { curl -sf "http://127.0.0.1:$jira_port/_emulator/state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["writes"])'; }
echo "Jira writes so far: $(jira_writes)"

step "keysync sync   (the real sync)"
"${keysync[@]}" sync
applied=$(latest_run)
"${keysync[@]}" run "$applied" --changes --product jira --op update_user | sed -n '/^USER/,$p'
after_first=$(jira_writes)
echo "Jira writes after the sync: $after_first"

step "keysync sync   (again: nothing left to change)"
"${keysync[@]}" sync
again=$(latest_run)
after_second=$(jira_writes)
echo "Jira writes after the second sync: $after_second"
if [ "$after_first" != "$after_second" ]; then
  echo "the second sync wrote to Jira" >&2
  exit 1
fi
step "Done: the second sync changed nothing"
