"""docker-compose.yml and .env.example against service.settings.Settings, without a container: every setting
can reach every service container (from .env through env_file, which may be missing), the compose defaults are
valid settings, every service keeps its CPU and memory limits once YAML's anchors and merges are resolved (as
PyYAML and compose resolve them), and .env.example names every setting with values the service accepts.
scripts/compose-smoke.sh checks it for real: an API key set in .env is enforced by the composed service."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from devtools.paths import ROOT
from service.settings import Settings

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS = sorted(f"ATTENTION_{name.upper()}" for name in Settings.model_fields)
DEFAULT = re.compile(r"^\$\{(\w+):?-(.*)\}$")  # ${NAME:-default}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def attention_services() -> dict[str, dict[str, Any]]:
    """The services that run the service's image (not the nginx balancer)."""
    services = compose()["services"]
    chosen = {name: s for name, s in services.items() if "attention-service" in str(s.get("image"))}
    assert {"attention", "attention-gpu", "attention-replica"} <= set(chosen)
    return chosen


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def reads_dotenv_if_present(service: dict[str, Any]) -> bool:
    """env_file names .env and does not require it (a missing .env must not stop `up`)."""
    entries = service.get("env_file", [])
    entries = [entries] if isinstance(entries, str | dict) else entries
    for entry in entries:
        entry = {"path": entry} if isinstance(entry, str) else entry
        if entry["path"] in (".env", "./.env") and entry.get("required", True) is False:
            return True
    return False


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize("name", sorted(attention_services()))
def test_every_setting_reaches_the_service_from_dotenv(name):
    service = attention_services()[name]
    listed = environment(service)
    from_dotenv = reads_dotenv_if_present(service)  # then every variable set in .env reaches the container
    missing = [s for s in SETTINGS if s not in listed and not from_dotenv]
    assert not missing, f"{name}: no `env_file: [{{path: .env, required: false}}]`: {missing} cannot reach it"
    unknown = [key for key in listed if key.startswith("ATTENTION_") and key not in SETTINGS]
    assert not unknown, f"{name}: no such setting in service.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", sorted(attention_services()))
def test_compose_defaults_are_kept_and_valid(name, monkeypatch):
    defaults = {}
    for key, value in environment(attention_services()[name]).items():
        match = DEFAULT.match(value or "")
        assert match and match.group(1) == key, f"{name}: {key}: {value!r} is not ${{{key}:-default}}"
        defaults[key] = match.group(2)
    assert defaults["ATTENTION_MAX_CONCURRENT"] == "1"  # one core for the event loop, one for torch
    assert defaults["ATTENTION_LOAD_MODELS"] == "startup"
    settings_from(defaults, monkeypatch)  # each default is a valid value


@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_every_service_keeps_its_cpu_and_memory_limits(name):
    deploy = compose()["services"][name].get("deploy") or {}
    limits = deploy.get("resources", {}).get("limits", {})
    assert limits.get("cpus"), f"{name}: no CPU limit once merged: {deploy}"
    assert limits.get("memory"), f"{name}: no memory limit once merged: {deploy}"


def test_the_gpu_service_keeps_its_own_memory_limit_and_device_reservation():
    services = compose()["services"]
    resources = services["attention-gpu"]["deploy"]["resources"]
    assert resources["limits"]["cpus"] == services["attention"]["deploy"]["resources"]["limits"]["cpus"]
    assert "GPU_MEMORY_LIMIT" in resources["limits"]["memory"]
    (device,) = resources["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["attention-replica"]["deploy"]["replicas"] == "${REPLICAS:-3}"


def test_env_example_names_every_setting():
    text = ENV_EXAMPLE.read_text()
    missing = [s for s in SETTINGS if not re.search(rf"^#? ?{s}=", text, re.MULTILINE)]
    assert not missing, f".env.example neither sets nor shows (commented) {missing}"


def test_env_example_values_are_valid_settings(monkeypatch, tmp_path):
    """The set lines and the commented ones once uncommented, read as compose reads .env (quotes included)."""
    uncommented = tmp_path / "env"
    example = ENV_EXAMPLE.read_text()
    uncommented.write_text(re.sub(r"^# ?(ATTENTION_\w+=)", r"\1", example, flags=re.MULTILINE))
    values = {k: v for k, v in dotenv_values(uncommented).items() if k.startswith("ATTENTION_") and v}
    assert set(values) == set(SETTINGS)
    settings = settings_from(values, monkeypatch)
    assert settings.api_keys and settings.cors_origins == ["https://app.example"] and settings.models
