"""The Ray Serve config (deploy/ray/serve.yaml), the KubeRay manifest (deploy/ray/rayservice.yaml) and the
settings-to-options mapping (service/ray_serve/options.py), read by Ray Serve's own schemas. Needs the ray
extra (scripts/ray-smoke.sh installs it and runs these tests on CI)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from devtools.compute import settings_from_env
from devtools.paths import ROOT
from service.ray_serve.options import deployment_options, replica_threads
from service.server.compute_pool import PIPELINE

serve_schema = pytest.importorskip("ray.serve.schema", reason="the ray extra: pip install '.[ray]'")

SERVE_YAML = ROOT / "deploy" / "ray" / "serve.yaml"
RAYSERVICE_YAML = ROOT / "deploy" / "ray" / "rayservice.yaml"


def serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(SERVE_YAML.read_text())
    return config


def test_serve_config_is_valid_for_serve_with_a_cpu_and_a_gpu_application():
    schema = serve_schema.ServeDeploySchema.model_validate(serve_config())
    apps = {app.name: app for app in schema.applications}
    assert set(apps) == {"attention", "attention-gpu"}
    assert {app.import_path for app in apps.values()} == {"service.ray_serve.deployment:build"}
    (gpu,) = apps["attention-gpu"].deployments
    assert gpu.ray_actor_options.num_gpus == 1 and gpu.ray_actor_options.num_cpus >= 1
    (cpu,) = apps["attention"].deployments
    assert cpu.autoscaling_config["min_replicas"] >= 1
    for app in apps.values():
        settings = settings_from_env(app.runtime_env["env_vars"])
        # the proxy's end-to-end limit (408) must leave the replica's own time limit (504) room to answer
        assert schema.http_options.request_timeout_s > settings.request_timeout_s


def test_kuberay_manifest_serves_the_serve_config():
    manifest = yaml.safe_load(RAYSERVICE_YAML.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == serve_config()
    cluster = manifest["spec"]["rayClusterConfig"]
    import ray

    assert cluster["rayVersion"] == ray.__version__
    images = [
        container["image"]
        for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
        for container in group["template"]["spec"]["containers"]
    ]
    assert set(images) == {"attention-service:ray", "attention-service:ray-gpu"}
    (gpu,) = [group for group in cluster["workerGroupSpecs"] if group["groupName"] == "gpu"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_settings_map_to_serve_options_that_serve_accepts():
    settings = settings_from_env(
        {
            "ATTENTION_MAX_CONCURRENT": "3",
            "ATTENTION_MAX_QUEUE": "5",
            "ATTENTION_TORCH_THREADS": "2",
            "ATTENTION_REQUEST_TIMEOUT_S": "45",
        }
    )
    options = deployment_options(settings)
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 2}
    assert options["max_ongoing_requests"] == PIPELINE
    assert options["max_queued_requests"] == 5
    assert options["backpressure_config"] == {"status_code": 503, "retry_after_s": 1}
    assert options["graceful_shutdown_timeout_s"] == 45
    serve_schema.DeploymentSchema.model_validate({"name": "attention", **options})


def test_unset_settings_give_one_replica_of_one_cpu_not_this_machines_core_count():
    options = deployment_options(settings_from_env({}))
    assert options["num_replicas"] == 1 and options["ray_actor_options"] == {"num_cpus": 1}


def test_build_binds_the_deployment_with_the_options_of_the_environment(monkeypatch):
    from service.ray_serve.deployment import DEPLOYMENT, build

    monkeypatch.setenv("ATTENTION_MAX_QUEUE", "7")
    monkeypatch.setenv("ATTENTION_MAX_CONCURRENT", "2")
    deployment = build({})._bound_deployment
    assert deployment.name == DEPLOYMENT
    assert (deployment.num_replicas, deployment.max_queued_requests) == (2, 7)
    with pytest.raises(ValueError, match="expected none"):
        build({"replicas": 3})


@pytest.mark.parametrize(("cpus", "threads"), [(0.5, 1), (1, 1), (2, 2), (3.5, 3)])
def test_a_replica_computes_with_the_whole_cpus_ray_assigned_it(cpus, threads):
    assert replica_threads(cpus) == threads
