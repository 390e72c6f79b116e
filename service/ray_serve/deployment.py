"""The Ray Serve deployment of the service: `import_path: service.ray_serve.deployment:build` in a Serve
config (deploy/ray/serve.yaml), or `serve run service.ray_serve.deployment:build`.

Each replica builds the service's app in its own process (replica.py), with the ATTENTION_* settings of its
runtime_env and as many torch threads as the whole CPUs Ray assigned it. Serve's HTTP proxies route to the
app through @serve.ingress, so the routes and /openapi.json are the plain service's.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from service.ray_serve.options import deployment_options, replica_threads
from service.ray_serve.replica import ReplicaCompute, ReplicaIdentity, replica_app
from service.server.state import service_state
from service.settings import Settings

DEPLOYMENT = "attention"


def build_replica_app() -> FastAPI:
    """Runs in each replica as it starts: the app, with this replica's identity and torch threads."""
    settings = Settings()
    if settings.torch_threads is None:
        assigned: float = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        settings = settings.model_copy(update={"torch_threads": replica_threads(assigned)})
    identity = ReplicaIdentity(
        replica=serve.get_replica_context().replica_id.unique_id,
        node=ray.get_runtime_context().get_node_id(),
        pid=os.getpid(),
    )
    return replica_app(settings, identity)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(build_replica_app)
class AttentionReplica:
    app: FastAPI  # set by @serve.ingress

    async def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising makes it replace the replica."""
        compute = service_state(self.app).compute
        if isinstance(compute, ReplicaCompute) and compute.runaway:
            raise RuntimeError(compute.runaway)


def build(args: dict[str, Any]) -> Application:
    """The application, its deployment options from the ATTENTION_* settings (options.py). `args` (the Serve
    config's `args:`) takes nothing: the settings are environment variables of the runtime_env."""
    if args:
        raise ValueError(
            f"found args {sorted(args)}; expected none: set ATTENTION_* variables in runtime_env.env_vars, "
            "and Serve options under deployments:"
        )
    # @serve.deployment made the class a Deployment, which mypy does not know
    deployment: Any = AttentionReplica
    application: Application = deployment.options(**deployment_options(Settings())).bind()
    return application
