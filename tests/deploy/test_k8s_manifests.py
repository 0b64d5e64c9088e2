"""deploy/k8s validates offline against the Kubernetes schemas and covers every service."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def documents() -> list[tuple[str, dict]]:
    docs = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


def test_kustomization_lists_every_manifest():
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize(
    ("name", "doc"),
    documents(),
    ids=lambda v: v if isinstance(v, str) else v["kind"] + "/" + v["metadata"]["name"],
)
def test_manifest_is_valid(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_service_has_probes_limits_and_a_pdb():
    docs = [d for _, d in documents()]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    services = [p.name for p in (ROOT / "services").iterdir() if (p / "__main__.py").exists()]
    assert services, "no services found"
    for service in services:
        assert service in deployments, f"{service} has no Deployment"
        assert service in pdbs, f"{service} has no PodDisruptionBudget"
        container = deployments[service]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][-1] == f"services.{service}"
        assert "readinessProbe" in container and "livenessProbe" in container
        assert container["resources"]["limits"] and container["resources"]["requests"]


def test_media_nodes_use_host_network_and_autoscale():
    docs = [d for _, d in documents()]
    media = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "media")
    assert media["spec"]["template"]["spec"]["hostNetwork"] is True
    hpas = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert "media" in hpas
    nats = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats")
    assert nats["spec"]["replicas"] == 3
