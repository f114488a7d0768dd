"""What one activation costs the stand-by's API server, by what its patch asks: N deactivated
Deployments of one plan (written as the syncer writes them) switched on, 64 in flight, in a light
stand-by (API server and etcd only, the fence policy installed as shipped), with

- **kept**: the job's RFC 6902 operations alone, which leave the syncer's managedFields on the
  object (what the job sent until session 21);
- **handed_over**: the same and ``managedFields: [{}]``, which strips them (what it sends now);
- **merge**: the same change as `kept` as one JSON merge patch (measured in session 21 against
  `kept`, not taken: no difference);
- **replicas**: a merge patch of the replicas alone (the activation benchmark's plain-client
  baseline, which leaves the copy a copy);

each with the plan fenced (as in a failover) and without (the replicas alone only without: the
fence refuses a write that leaves a copy), rounds interleaved (each in another order), the
medians of the time to the last response and of the API server's CPU.

    .venv/bin/python benchmarks/patches.py [--deployments 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

from activation import activation_operations, activation_patch, merge_replicas
from common import KubeClient, run, start_env, stop_env
from fences import round_of

from schemas import transforms


def as_merge_patch(obj: dict[str, Any]) -> tuple[Any, str]:
    """``kept`` as one merge patch: for these copies every operation adds, replaces or removes one
    field of an object with a value that is no map, which a merge patch does exactly."""
    patch: dict[str, Any] = {}
    for op in transforms.activation_patch(obj):
        assert op["op"] in ("add", "replace", "remove") and not isinstance(op.get("value"), dict), op
        *parents, key = (token.replace("~1", "/").replace("~0", "~") for token in op["path"].split("/")[1:])
        node = patch
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = None if op["op"] == "remove" else op["value"]
    return patch, "application/merge-patch+json"


FORMS: dict[str, Callable[[dict[str, Any]], tuple[Any, str]]] = {
    "kept": activation_operations, "handed_over": activation_patch, "merge": as_merge_patch,
    "replicas": merge_replicas}


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = start_env(full=False, services=())
    measured: dict[str, list[dict[str, float]]] = {}
    try:
        async with KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig, connections=64) as dst:
            apiserver = env.clusters["destination"].processes["kube-apiserver"].pid
            for r in range(args.rounds):
                forms = list(FORMS.items())
                forms = forms[r % len(forms):] + forms[:r % len(forms)]  # no form always measured first
                for fenced in (True, False):
                    for form, patch in forms:
                        if fenced and form == "replicas":  # the copy stays a copy: the fence refuses it
                            continue
                        name = f"{form}_{'fenced' if fenced else 'unfenced'}"
                        measured.setdefault(name, []).append(await round_of(
                            dst, apiserver, f"p{r}-{name.replace('_', '-')}", args.deployments,
                            1 if fenced else 0, "per_plan" if fenced else "none", patch))
    finally:
        stop_env(env)
    result: dict[str, Any] = {"benchmark": "patches", "deployments": args.deployments, "rounds": args.rounds}
    for name, rounds in measured.items():
        result[name] = {key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]}
        result[name]["apiserver_cpu_each_round"] = [round(r["apiserver_cpu_seconds"], 2) for r in rounds]
    for fence in ("fenced", "unfenced"):
        kept = result[f"kept_{fence}"]
        for form in ("handed_over", "merge"):
            if kept["apiserver_cpu_seconds"]:
                result[f"{form}_to_kept_cpu_{fence}"] = round(
                    result[f"{form}_{fence}"]["apiserver_cpu_seconds"] / kept["apiserver_cpu_seconds"], 2)
            if kept["seconds"]:
                result[f"{form}_to_kept_seconds_{fence}"] = round(
                    result[f"{form}_{fence}"]["seconds"] / kept["seconds"], 2)
    return result


if __name__ == "__main__":
    run(main)
