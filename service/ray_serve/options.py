"""The service's settings as Ray Serve deployment options: the defaults of deployment.py's `build` (a Serve
config's `deployments:` section overrides any of them, as Serve always does). docs/deployment.md's "Ray
Serve" section has the table:

- ATTENTION_MAX_CONCURRENT (compute processes) -> num_replicas: a replica is one compute process (1 when
  unset: the setting's default counts this machine's cores, not the cluster's);
- ATTENTION_TORCH_THREADS -> ray_actor_options.num_cpus (1 when unset); a replica computes with as many torch
  threads as the whole CPUs Ray assigns it (deployment.py);
- max_ongoing_requests = PIPELINE (2): one request computing, the next already there, as a compute process;
- ATTENTION_MAX_QUEUE -> max_queued_requests (in each proxy), beyond which Serve answers 503 with Retry-After;
- ATTENTION_REQUEST_TIMEOUT_S -> the replica's own time limit (504; replica.py) and
  graceful_shutdown_timeout_s, so that a replica stopped by a rolling update or a downscale finishes its
  requests; a replica's health check fails while a computation runs past it, and Serve replaces it;
- ATTENTION_LOAD_MODELS=startup: the models are loaded and warmed up in the replica's start, before Serve
  routes to it.
"""

from __future__ import annotations

import math
from typing import Any

from service.server.compute_pool import PIPELINE
from service.settings import Settings

RETRY_AFTER_S = 1  # as the plain service's 503s
HEALTH_CHECK_PERIOD_S = 5.0  # how soon a replica with a runaway computation is found and replaced


def deployment_options(settings: Settings) -> dict[str, Any]:
    replicas = settings.max_concurrent if "max_concurrent" in settings.model_fields_set else 1
    return {
        "num_replicas": replicas,
        "ray_actor_options": {"num_cpus": settings.torch_threads or 1},
        "max_ongoing_requests": PIPELINE,
        "max_queued_requests": settings.max_queue,
        "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S},
        "graceful_shutdown_timeout_s": settings.request_timeout_s,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
    }


def replica_threads(assigned_cpus: float) -> int:
    """A replica's torch threads: the whole CPUs Ray assigned it (at least 1: fractions share a core)."""
    return max(1, math.floor(assigned_cpus))
