"""The image's inputs agree with each other: the lock pins every runtime dependency (with hashes,
within pyproject's ranges), the Dockerfile installs from it and leaves the development tooling
out, and every Deployment's command is an entrypoint the package declares."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    text = (REPO / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==([^ \\\n]+)", block)
        if match:
            pins[canonicalize_name(match.group(1))] = (match.group(2), block.count("--hash=sha256:"))
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked()
    for spec in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(spec.split("#")[0])
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version), f"{name}=={version} is outside {requirement.specifier}"
        assert hashes, f"{name} has no hashes"
    assert all(hashes for _, hashes in pins.values())
    dev = {canonicalize_name(Requirement(s).name) for s in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert not dev & set(pins), f"development tools in the image's lock: {sorted(dev & set(pins))}"


def test_the_image_installs_the_lock_and_not_the_development_tooling() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "-r /src/requirements.lock" in dockerfile
    assert "rm -rf /src/services/devenv" in dockerfile
    assert re.search(r"^USER 65532", dockerfile, re.M)


def test_each_deployment_runs_an_entrypoint_the_package_declares() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    seen = set()
    for path in sorted((REPO / "k8s" / "base").glob("*/deployment.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                command = container["command"][0]
                assert command in scripts, f"{path}: {command} is not in [project.scripts]"
                module, _, function = scripts[command].partition(":")
                assert callable(getattr(importlib.import_module(module), function))
                seen.add(command)
    assert seen == {"standby-watcher", "standby-syncer", "standby-recovery"}
