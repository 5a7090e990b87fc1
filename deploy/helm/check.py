"""Renders the keysync chart offline, validates the manifests and checks what they promise.

helm lint (strict) and helm template run through the Helm SDK in the PyPI package
helm-python-sdk, for the default values and for helm/keysync/ci/*.yaml; every rendered
manifest is then validated with kubernetes-validate --strict against Kubernetes 1.30.

Then the rendered manifests are read back and checked against the values they came from:

- each component has its own ConfigMap, its Deployment's checksum annotation is that
  file's, and the file parses as TOML;
- every `*_file` path of a component's file is a file its pod mounts, and every Secret
  file a pod mounts is named by its file (no pod is handed a secret it does not mount, and
  no pod mounts a secret it does not use);
- each secret is mounted only where it belongs: the operator's token and the API's TLS key
  in the control plane, Keycloak secrets in the fetcher, a product's credential in its own
  applier (the control plane too, for both, with controlPlane.testConnection), a NATS
  identity or a client certificate in its own service; so the Jira applier mounts no
  Confluence, Bitbucket or Keycloak secret and no operator token, the fetcher no product
  credential;
- every secret volume has defaultMode 0400 (secretDefaultMode);
- the planner and the appliers send the service token, never the operator's; with TLS on,
  every `[control_plane] endpoint` is https://, `allow_plaintext` is absent, the clients
  trust the configured CA and, with mutual TLS, show their own client certificate; with it
  off, http:// and `allow_plaintext = true`;
- every component has a NetworkPolicy selecting its pods, allowing ingress only to the
  health port (and gRPC for the control plane, from the planner and the appliers), and
  egress to DNS, NATS, the control plane (planner, appliers), Keycloak (fetcher) and its own
  product (each applier) on the configured ports.

Values the chart must refuse (plaintext not allowed without TLS, no fsGroup, ...) are
rendered too, and must fail with their message. Exits non-zero on any lint error, invalid
manifest or failed check.
"""

import copy
import hashlib
import pathlib
import subprocess
import sys
import tempfile
import tomllib

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "keysync"
KUBERNETES_VERSION = "1.30.0"
RELEASE = "keysync"
SECRETS_ROOT = "/run/secrets/keysync"
SECRET_MODE = 0o400
PRODUCTS = ("jira", "confluence", "bitbucket")


def chart_values(overrides: dict) -> dict:
    """The chart's defaults with `overrides` merged in, as Helm merges them."""

    def merge(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(copy.deepcopy(defaults), copy.deepcopy(overrides))


def secret_path(ref: dict | None, key_field: str = "key") -> str | None:
    if not ref or not ref.get("secretName"):
        return None
    return f"{SECRETS_ROOT}/{ref['secretName']}/{ref[key_field]}"


def file_keys(table: dict, prefix: str = "") -> dict:
    """Every `*_file` key of a parsed TOML file, by dotted name, with its path."""
    found = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(file_keys(value, f"{dotted}."))
        elif key.endswith("_file"):
            found[dotted] = value
    return found


def owners(values: dict, components: list) -> dict:
    """Secret file path -> the components allowed to mount it, from the values."""
    allowed: dict = {}

    def allow(path, *names):
        if path:
            allowed.setdefault(path, set()).update(names)

    clients = ["planner"] + [c for c in components if c.startswith("applier-")]
    test_connection = values["controlPlane"].get("testConnection")
    extra = ["control-plane"] if test_connection else []
    allow(secret_path(values["operatorToken"]), "control-plane")
    allow(secret_path(values["serviceToken"]), "control-plane", *clients)
    tls = values["controlPlane"]["tls"]
    if tls.get("enabled"):
        allow(f"{SECRETS_ROOT}/{tls['secretName']}/{tls['certKey']}", "control-plane")
        allow(f"{SECRETS_ROOT}/{tls['secretName']}/{tls['keyKey']}", "control-plane")
        allow(secret_path(tls.get("clientCa")), "control-plane")
        allow(secret_path(tls.get("ca")), *clients)
        certs = tls.get("clientCerts") or {}
        for component in clients if tls.get("clientCa", {}).get("secretName") else []:
            cert = dict(certs.get(component) or certs.get("applier" if component.startswith("applier-") else "") or {})
            cert.setdefault("certKey", "tls.crt")
            cert.setdefault("keyKey", "tls.key")
            allow(secret_path(cert, "certKey"), component)
            allow(secret_path(cert, "keyKey"), component)
    for connector in (values.get("keycloak") or {}).values():
        allow(secret_path(connector.get("clientSecret")), "fetcher", *extra)
        allow(secret_path(connector.get("ca")), "fetcher", *extra)
    for product, settings in values["appliers"].items():
        if not settings.get("enabled"):
            continue
        for field in ("token", "password", "ca"):
            allow(secret_path(settings.get(field)), f"applier-{product}", *extra)
    nats = values["nats"]
    allow(secret_path(nats.get("ca")), *components)
    users = nats.get("users") or {}
    for component in components:
        user = users.get(component)
        if user is None and component.startswith("applier-"):
            user = users.get("applier")
        for field in ("password", "credentials", "nkeySeed", "token"):
            allow(secret_path((user or {}).get(field)), component)
        cert = dict((user or {}).get("clientCert") or {})
        if cert:
            cert.setdefault("certKey", "tls.crt")
            cert.setdefault("keyKey", "tls.key")
            allow(secret_path(cert, "certKey"), component)
            allow(secret_path(cert, "keyKey"), component)
    return allowed


def check_pods(name: str, values: dict, documents: list) -> list:
    problems = []
    by_kind: dict = {}
    for doc in documents:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind.get("Deployment", {})
    components = [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments.values()]
    allowed = owners(values, components)
    tls = values["controlPlane"]["tls"].get("enabled")
    test_connection = values["controlPlane"].get("testConnection")
    enabled = [p for p, s in values["appliers"].items() if s.get("enabled")]

    for deployment in deployments.values():
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        where = f"{name}: {component}"
        pod = deployment["spec"]["template"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        config_map = by_kind.get("ConfigMap", {}).get(volumes["config"]["configMap"]["name"])
        if config_map is None:
            problems.append(f"{where}: no ConfigMap of its own")
            continue
        text = config_map["data"]["keysync.toml"]
        if pod["metadata"]["annotations"].get("checksum/config") != hashlib.sha256(text.encode()).hexdigest():
            problems.append(f"{where}: checksum/config is not the sha256 of its own file")
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            problems.append(f"{where}: keysync.toml does not parse: {error}")
            continue

        mounted = set()
        container = pod["spec"]["containers"][0]
        mount_paths = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        for volume in volumes.values():
            secret = volume.get("secret")
            if secret is None:
                continue
            if secret.get("defaultMode") != SECRET_MODE:
                problems.append(f"{where}: secret volume {volume['name']} has defaultMode "
                                f"{secret.get('defaultMode')!r}, not 0400")
            if not secret.get("items"):
                problems.append(f"{where}: secret volume {volume['name']} mounts every key of "
                                f"{secret['secretName']}, not only the ones its file names")
            if volume["name"] not in mount_paths:
                problems.append(f"{where}: secret volume {volume['name']} is not mounted")
                continue
            for item in secret.get("items", []):
                mounted.add(f"{mount_paths[volume['name']]}/{item['path']}")

        named = file_keys(config)
        for key, path in named.items():
            if path not in mounted:
                problems.append(f"{where}: `{key}` names {path}, which the pod does not mount")
        for path in sorted(mounted - set(named.values())):
            problems.append(f"{where}: mounts {path}, which its file does not name")
        for path in sorted(mounted):
            if component not in allowed.get(path, set()):
                problems.append(f"{where}: mounts {path}, which belongs to "
                                f"{', '.join(sorted(allowed.get(path, set()))) or 'no component'}")

        # The sections each component reads, and nothing more (crates/settings).
        products = config.get("products", {})
        control_plane = config.get("control_plane", {})
        if component.startswith("applier-"):
            product = component.removeprefix("applier-")
            if set(products) != {product}:
                problems.append(f"{where}: has products {sorted(products)}, not only {product}")
            if "keycloak" in config:
                problems.append(f"{where}: has [keycloak.*] sections")
        if component == "fetcher" and (products or control_plane):
            problems.append(f"{where}: has [products.*] or [control_plane]")
        if component == "fetcher":
            # `events` as the values say, with the documented defaults for what they leave out.
            for connector, settings in values.get("keycloak", {}).items():
                wanted = settings.get("events")
                found = config.get("keycloak", {}).get(connector, {}).get("events")
                if wanted is None and found is not None:
                    problems.append(f"{where}: [keycloak.{connector}] has events the values do not set")
                if wanted is not None and found != {
                        "enabled": bool(wanted.get("enabled", False)),
                        "poll_interval_ms": int(wanted.get("pollIntervalMs", 1000)),
                        "batch_window_ms": int(wanted.get("batchWindowMs", 500))}:
                    problems.append(f"{where}: [keycloak.{connector}] events = {found}, not as the values say")
        if component == "planner":
            if set(products) != set(enabled):
                problems.append(f"{where}: plans {sorted(products)}, not the enabled {sorted(enabled)}")
            for product, section in products.items():
                secret_keys = {"token_file", "password_file", "token", "password"} & set(section)
                if secret_keys:
                    problems.append(f"{where}: [products.{product}] has {sorted(secret_keys)}")
            for connector, section in config.get("keycloak", {}).items():
                if set(section) != {"required_groups"}:
                    problems.append(f"{where}: [keycloak.{connector}] has more than required_groups")
        if component == "control-plane" and not test_connection and (products or "keycloak" in config):
            problems.append(f"{where}: has [products.*] or [keycloak.*] without testConnection")

        # The control API: TLS, or plaintext explicitly allowed.
        if component == "fetcher":
            continue
        endpoint = control_plane.get("endpoint", "")
        if not endpoint.startswith("https://" if tls else "http://"):
            problems.append(f"{where}: [control_plane] endpoint {endpoint!r} with TLS "
                            f"{'on' if tls else 'off'}")
        if component == "control-plane":
            if tls and "allow_plaintext" in control_plane:
                problems.append(f"{where}: allow_plaintext is set although TLS is on")
            if tls and not {"tls_cert_file", "tls_key_file"} <= set(control_plane):
                problems.append(f"{where}: TLS is on without tls_cert_file and tls_key_file")
            if not tls and control_plane.get("allow_plaintext") is not True:
                problems.append(f"{where}: TLS is off and allow_plaintext is not true")
            if "ca_file" in control_plane:
                problems.append(f"{where}: ca_file is the clients' key")
        else:
            if control_plane.get("service_token_file") != secret_path(values["serviceToken"]):
                problems.append(f"{where}: [control_plane] service_token_file is not the service token")
            if "token_file" in control_plane or "token" in control_plane:
                problems.append(f"{where}: [control_plane] has the operator's `token`")
            mutual = tls and values["controlPlane"]["tls"]["clientCa"].get("secretName")
            if mutual and not {"client_cert_file", "client_key_file"} <= set(control_plane):
                problems.append(f"{where}: mutual TLS is on and it has no client certificate")
            if not mutual and ({"client_cert_file", "client_key_file"} & set(control_plane)):
                problems.append(f"{where}: a client certificate without mutual TLS")
            ca = secret_path(values["controlPlane"]["tls"].get("ca"))
            if tls and ca and control_plane.get("ca_file") != ca:
                problems.append(f"{where}: TLS is on and ca_file is not {ca}")
    return problems


def rule_ports(rule: dict) -> set:
    return {(port.get("port"), port.get("protocol", "TCP")) for port in rule.get("ports", [])}


def configured_ports(ports: list) -> set:
    return {(port["port"], port.get("protocol", "TCP")) for port in ports}


def check_network_policies(name: str, values: dict, documents: list) -> list:
    problems = []
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    if not values["networkPolicy"]["enabled"]:
        return [f"{name}: NetworkPolicy rendered while disabled"] if policies else []
    np = values["networkPolicy"]
    grpc = (values["controlPlane"]["grpcPort"], "TCP")
    health = (values["healthPort"], "TCP")
    control_plane_selector = None
    for deployment in deployments:
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "control-plane":
            control_plane_selector = deployment["spec"]["selector"]["matchLabels"]
    components = sorted(d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments)
    clients = {c for c in components if c == "planner" or c.startswith("applier-")}

    for deployment in deployments:
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        where = f"{name}: NetworkPolicy of {component}"
        selector = deployment["spec"]["selector"]["matchLabels"]
        matching = [p for p in policies if p["spec"]["podSelector"].get("matchLabels") == selector]
        if len(matching) != 1:
            problems.append(f"{where}: {len(matching)} policies select its pods, not 1")
            continue
        spec = matching[0]["spec"]
        if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
            problems.append(f"{where}: policyTypes {spec.get('policyTypes')}")

        ingress = spec.get("ingress", [])
        ports = set().union(*(rule_ports(rule) for rule in ingress)) if ingress else set()
        expected = {health} | ({grpc} if component == "control-plane" else set())
        if ports != expected:
            problems.append(f"{where}: ingress ports {sorted(ports)}, expected {sorted(expected)}")
        for rule in ingress:
            if grpc in rule_ports(rule) and component == "control-plane":
                sources = rule.get("from", [])
                if not sources:
                    problems.append(f"{where}: the gRPC port is open to any address")
                    continue
                allowed = set()
                for peer in sources:
                    for expression in peer.get("podSelector", {}).get("matchExpressions", []):
                        if expression["key"] == "app.kubernetes.io/component":
                            allowed |= set(expression["values"])
                if allowed != clients:
                    problems.append(f"{where}: gRPC from {sorted(allowed)}, expected {sorted(clients)}")
                for peer in np["controlPlaneFrom"]:
                    if peer not in sources:
                        problems.append(f"{where}: controlPlaneFrom peer {peer} missing")

        egress = spec.get("egress", [])

        def has_rule(ports: set, to: list | None) -> bool:
            return any(rule_ports(rule) == ports and rule.get("to", []) == (to or []) for rule in egress)

        wanted = {"DNS": (configured_ports(np["dns"]["ports"]), np["dns"]["to"]),
                  "NATS": (configured_ports(np["nats"]["ports"]), np["nats"]["to"])}
        if values["otel"]["endpoint"]:
            wanted["OTLP"] = (configured_ports(np["otel"]["ports"]), np["otel"]["to"])
        if component in clients:
            wanted["control plane"] = ({grpc}, [{"podSelector": {"matchLabels": control_plane_selector}}])
        if component == "fetcher" or (component == "control-plane" and values["controlPlane"]["testConnection"]):
            wanted["Keycloak"] = (configured_ports(np["keycloak"]["ports"]), np["keycloak"]["to"])
        for product in PRODUCTS:
            rule = np["products"][product]
            ours = component == f"applier-{product}" or (
                component == "control-plane" and values["controlPlane"]["testConnection"])
            if ours and values["appliers"][product].get("enabled"):
                wanted[product] = (configured_ports(rule["ports"]), rule["to"])
            elif rule["to"] and has_rule(configured_ports(rule["ports"]), rule["to"]):
                problems.append(f"{where}: egress to {product}, which is not its product")
        for what, (ports, to) in wanted.items():
            if not has_rule(ports, to):
                problems.append(f"{where}: no egress rule to {what} on {sorted(ports)}")
        if not any(53 in {p for p, _ in rule_ports(rule)} for rule in egress):
            problems.append(f"{where}: no DNS egress")
        expected_rules = len(wanted) + len(np.get("extraEgress") or [])
        if len(egress) != expected_rules:
            problems.append(f"{where}: {len(egress)} egress rules, expected {expected_rules}")
    return problems


def check(name: str, overrides: dict, expected_kinds: dict) -> list:
    problems = []
    report = helm.lint(str(CHART), overrides, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"{name}: lint: {message.get('path')}: {message.get('error')}")
    problems += [f"{name}: lint: {error}" for error in report.get("errors", [])]

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(overrides, name=RELEASE, namespace="identity")
    documents = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    kinds: dict = {}
    for doc in documents:
        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
    for kind, count in expected_kinds.items():
        if kinds.get(kind, 0) != count:
            problems.append(f"{name}: expected {count} {kind}, rendered {kinds.get(kind, 0)}")

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for index, doc in enumerate(documents):
            path = pathlib.Path(tmp) / f"{index:02}-{doc['kind']}-{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(doc))
            files.append(str(path))
        result = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
             "-k", KUBERNETES_VERSION, *files],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            problems.append(f"{name}: kubernetes-validate:\n{result.stdout}{result.stderr}")

    values = chart_values(overrides)
    problems += check_pods(name, values, documents)
    problems += check_network_policies(name, values, documents)
    print(f"helm-check: {name}: {len(documents)} manifests "
          f"({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))})")
    return problems


def check_bus_replicas(name: str, overrides: dict, replicas: int) -> list:
    """Every component's `[bus]` asks for `replicas` JetStream replicas."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(overrides, name=RELEASE, namespace="identity")
    problems = []
    for template, text in sorted(rendered.items()):
        for doc in yaml.safe_load_all(text) if template.endswith(".yaml") else []:
            if not doc or doc.get("kind") != "ConfigMap":
                continue
            for key, toml in (doc.get("data") or {}).items():
                if "[bus]" in toml and f"\nreplicas = {replicas}\n" not in toml:
                    problems.append(f"{name}: {doc['metadata']['name']}/{key}: [bus] replicas is not {replicas}")
    return problems


def expect_failure(name: str, overrides: dict, reason: str) -> list:
    """Values the chart must refuse to render, with `reason` in the error."""
    try:
        with helm.Chart.load(str(CHART)) as chart:
            chart.render(overrides, name=RELEASE, namespace="identity")
    except Exception as error:  # the SDK raises its own error types
        if reason in str(error):
            print(f"helm-check: {name}: refused ({reason})")
            return []
        return [f"{name}: refused, but not for {reason!r}: {error}"]
    return [f"{name}: rendered, but must be refused ({reason})"]


def main() -> int:
    ci = CHART / "ci"
    everything = yaml.safe_load((ci / "all-enabled-values.yaml").read_text())
    tls = yaml.safe_load((ci / "tls-values.yaml").read_text())
    problems = check("default values", {}, {
        "Deployment": 3, "ConfigMap": 3, "Service": 1, "PodDisruptionBudget": 1,
        "NetworkPolicy": 3})
    problems += check("all-enabled values", everything, {
        "Deployment": 6, "ConfigMap": 6, "Service": 1, "PodDisruptionBudget": 6,
        "NetworkPolicy": 6})
    problems += check("TLS values", tls, {
        "Deployment": 5, "ConfigMap": 5, "Service": 1, "PodDisruptionBudget": 2,
        "NetworkPolicy": 5})
    production = yaml.safe_load((CHART / "values-production.yaml").read_text())
    problems += check("production values", production, {
        "Deployment": 3, "ConfigMap": 3, "Service": 1, "PodDisruptionBudget": 3,
        "NetworkPolicy": 3})
    problems += check_bus_replicas("production values", production, 3)
    problems += check_bus_replicas("default values", {}, 1)
    problems += check("no NetworkPolicy", {"networkPolicy": {"enabled": False}}, {
        "Deployment": 3, "NetworkPolicy": 0})
    problems += expect_failure(
        "plaintext not allowed", {"controlPlane": {"allowPlaintext": False}}, "set tls.enabled")
    problems += expect_failure(
        "a mode read as decimal", {"secretDefaultMode": 400}, "secretDefaultMode must be")
    problems += expect_failure(
        "a NATS user of no component", {"nats": {"users": {"controlplane": {}}}}, "not a component")
    problems += expect_failure(
        "mutual TLS without a client certificate",
        {"controlPlane": {"tls": {"enabled": True, "clientCa": {"secretName": "client-ca"}}}},
        "asks every client for a certificate")
    problems += expect_failure(
        "no fsGroup", {"podSecurityContext": {"fsGroup": None}}, "fsGroup is required")
    problems += expect_failure(
        "an applier without a credential",
        {"appliers": {"jira": {"enabled": True, "endpoint": "https://jira.example.org"}}},
        "set token.secretName")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"helm-check: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
