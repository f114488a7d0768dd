"""The development commands of ``standby``: local environments (``standby dev``), the demo and
CRD generation. They exist only where the development tooling is installed (a checkout with
``pip install -e .[dev]``); the production image has no ``services.devenv`` and its ``standby``
command has the operator commands only."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from schemas import crdgen
from services.devenv import binaries, bootstrap, demo, environment, natsd

DEFAULT_DIR = binaries.REPO_ROOT / ".devenv"


def _dev_up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    if args.nats_cluster < 1:
        print("--nats-cluster: at least 1 node", file=sys.stderr)
        return 2
    if environment.status(root)["running"]:
        print(f"an environment is already running in {root}; `standby dev down --dir {root}` first",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    env = environment.DevEnvironment(root, topology=args.topology, full=args.full, nats_nodes=args.nats_cluster,
                                     nats_tls=args.nats_tls or args.nats_cluster > 1)
    try:
        env.start()
        bootstrap.install(env)
        if args.services:
            bootstrap.start_services(env)
        env.write_files()
    except BaseException:
        env.stop()
        raise
    env.detach()
    elapsed = time.monotonic() - started
    print(f"standby dev environment ready in {elapsed:.1f}s ({args.topology} clusters, "
          f"{'full' if args.full else 'light'} mode)")
    for name, cluster in env.clusters.items():
        print(f"  {name:<12} {cluster.server}  kubeconfig: {cluster.kubeconfig}")
    assert env.nats is not None
    nodes = f"{len(env.nats.servers)} nodes, " if len(env.nats.servers) > 1 else ""
    tls = f"TLS, CA {env.nats.pki.ca_cert}, " if env.nats.pki else ""
    print(f"  {'nats':<12} {env.nats.url}  ({nodes}{tls}user {env.nats.user}, password in {root / 'env'})")
    for name, proc in env.services.items():
        print(f"  {name:<12} pid {proc.pid}  log: {proc.log_path}")
    print(f"\nUse it:  source {root / 'env'}; kubectl --kubeconfig {root / 'source.kubeconfig'} get ns")
    print(f"Stop it: standby dev down --dir {root}")
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    stopped = environment.down(root)
    print(f"stopped {len(stopped)} processes" + (f": {', '.join(stopped)}" if stopped else ""))
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    print(json.dumps(environment.status(Path(args.dir).resolve()), indent=2))
    return 0


def _dev_nats(args: argparse.Namespace) -> int:
    try:
        print(environment.nats_node(Path(args.dir).resolve(), args.node, args.action))
    except (RuntimeError, natsd.NatsStartError) as exc:
        print(f"standby dev nats: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    return demo.run(Path(args.dir).resolve(), topology=args.topology, keep=args.keep)


def _crds(args: argparse.Namespace) -> int:
    written = crdgen.write_all(Path(args.out))
    for path in written:
        print(path)
    return 0


def add_commands(sub: Any) -> None:
    """Register ``dev``, ``demo`` and ``crds`` on the ``standby`` parser's subcommands."""
    dev = sub.add_parser("dev", help="local real clusters and NATS").add_subparsers(dest="dev", required=True)
    up = dev.add_parser("up", help="start clusters and NATS, install CRDs")
    up.add_argument("--topology", choices=["two", "three"], default="two")
    up.add_argument("--full", action="store_true", help="add controller-manager, scheduler and kwok nodes")
    up.add_argument("--services", action="store_true", help="also run watcher, syncer and recovery")
    up.add_argument("--nats-cluster", type=int, default=1, metavar="N",
                    help="run NATS as a JetStream cluster of N nodes (TLS on clients and routes; streams R3)")
    up.add_argument("--nats-tls", action="store_true", help="TLS on NATS client connections (always in a cluster)")
    up.add_argument("--dir", default=str(DEFAULT_DIR))
    up.set_defaults(func=_dev_up)
    down = dev.add_parser("down", help="stop what `up` started")
    down.add_argument("--dir", default=str(DEFAULT_DIR))
    down.set_defaults(func=_dev_down)
    status = dev.add_parser("status", help="what is running")
    status.add_argument("--dir", default=str(DEFAULT_DIR))
    status.set_defaults(func=_dev_status)
    node = dev.add_parser("nats", help="stop, kill, wipe, start or restart one NATS node (failures by hand)")
    node.add_argument("action", choices=["stop", "kill", "wipe", "start", "restart"],
                      help="kill: SIGKILL; wipe: delete a stopped node's store (it catches up when started)")
    node.add_argument("node", help="n1, n2, ... (`standby dev status` lists them)")
    node.add_argument("--dir", default=str(DEFAULT_DIR))
    node.set_defaults(func=_dev_nats)

    run_demo = sub.add_parser("demo", help="the whole story on local clusters: sync, then fail over")
    run_demo.add_argument("--topology", choices=["two", "three"], default="two")
    run_demo.add_argument("--dir", default=str(DEFAULT_DIR / "demo"))
    run_demo.add_argument("--keep", action="store_true", help="leave the environment running afterwards")
    run_demo.set_defaults(func=_demo)

    crds = sub.add_parser("crds", help="generate the CRD manifests from the models")
    crds.add_argument("--out", default=str(binaries.REPO_ROOT / "k8s" / "crds"))
    crds.set_defaults(func=_crds)
