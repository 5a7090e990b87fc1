"""Renders the keysync chart offline and validates the manifests.

helm lint (strict) and helm template run through the Helm SDK in the PyPI package
helm-python-sdk, for the default values and for helm/keysync/ci/*.yaml; every rendered
manifest is then validated with kubernetes-validate --strict against Kubernetes 1.30.
Exits non-zero on any lint error or invalid manifest.
"""

import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "keysync"
KUBERNETES_VERSION = "1.30.0"


def check(name: str, values: dict, expected_kinds: dict) -> list:
    problems = []
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"{name}: lint: {message.get('path')}: {message.get('error')}")
    problems += [f"{name}: lint: {error}" for error in report.get("errors", [])]

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="keysync", namespace="identity")
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
    print(f"helm-check: {name}: {len(documents)} manifests "
          f"({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))})")
    return problems


def main() -> int:
    problems = check("default values", {}, {"Deployment": 4, "Service": 1, "ConfigMap": 1,
                                            "PodDisruptionBudget": 2})
    everything = yaml.safe_load((CHART / "ci" / "all-enabled-values.yaml").read_text())
    problems += check("all-enabled values", everything, {"Deployment": 6, "Service": 1,
                                                         "ConfigMap": 1, "PodDisruptionBudget": 6})
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"helm-check: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
