"""The ``standby`` command: local environments (``standby dev``), the demo, CRD generation and
stream keys."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from services.common import settings
from services.devenv import binaries

DEFAULT_DIR = binaries.REPO_ROOT / ".devenv"


def _dev_up(args: argparse.Namespace) -> int:
    from services.devenv import bootstrap, environment

    root = Path(args.dir).resolve()
    if environment.status(root)["running"]:
        print(f"an environment is already running in {root}; `standby dev down --dir {root}` first",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    env = environment.DevEnvironment(root, topology=args.topology, full=args.full)
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
    print(f"  {'nats':<12} {env.nats.url}  (user {env.nats.user}, password in {root / 'env'})")
    for name, proc in env.services.items():
        print(f"  {name:<12} pid {proc.pid}  log: {proc.log_path}")
    print(f"\nUse it:  source {root / 'env'}; kubectl --kubeconfig {root / 'source.kubeconfig'} get ns")
    print(f"Stop it: standby dev down --dir {root}")
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from services.devenv import environment

    root = Path(args.dir).resolve()
    stopped = environment.down(root)
    print(f"stopped {len(stopped)} processes" + (f": {', '.join(stopped)}" if stopped else ""))
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from services.devenv import environment

    print(json.dumps(environment.status(Path(args.dir).resolve()), indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from services.devenv.demo import run

    return run(Path(args.dir).resolve(), topology=args.topology, keep=args.keep)


def _crds(args: argparse.Namespace) -> int:
    from schemas import crdgen

    written = crdgen.write_all(Path(args.out))
    for path in written:
        print(path)
    return 0


def _stream_keys(args: argparse.Namespace) -> int:
    """Print a stream keys Secret with a new active key; with ``--rotate``, keeping the keys of an
    existing one (messages sealed under them stay readable)."""
    import yaml

    from schemas import sealing
    from services.common import keys as stream_keys

    kid = args.id or time.strftime("k%Y%m%d-%H%M%S", time.gmtime())
    keys: dict[str, bytes] = {}
    if args.rotate:
        text = sys.stdin.read() if args.rotate == "-" else Path(args.rotate).read_text()
        existing = stream_keys.keyring_of(yaml.safe_load(text) or {})
        if kid in existing.keys:
            print(f"key id {kid!r} is already in the keyring", file=sys.stderr)
            return 2
        keys = dict(existing.keys)
    keyring = sealing.Keyring(kid, {**keys, kid: sealing.new_key()})
    print(json.dumps(stream_keys.secret_manifest(keyring, name=args.name, namespace=args.namespace), indent=2))
    return 0


def _nats_credentials(args: argparse.Namespace) -> int:
    """Print the Secret the broker and the services read their NATS user and password from (the
    shipped manifests name it: `standby-nats`, keys NATS_USER and NATS_PASSWORD)."""
    import base64
    import secrets

    data = {"NATS_USER": args.user, "NATS_PASSWORD": secrets.token_urlsafe(32)}
    print(json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": args.name, "namespace": args.namespace,
                     "labels": {"app.kubernetes.io/part-of": "standby"}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="standby", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="local real clusters and NATS").add_subparsers(dest="dev", required=True)
    up = dev.add_parser("up", help="start clusters and NATS, install CRDs")
    up.add_argument("--topology", choices=["two", "three"], default="two")
    up.add_argument("--full", action="store_true", help="add controller-manager, scheduler and kwok nodes")
    up.add_argument("--services", action="store_true", help="also run watcher, syncer and recovery")
    up.add_argument("--dir", default=str(DEFAULT_DIR))
    up.set_defaults(func=_dev_up)
    down = dev.add_parser("down", help="stop what `up` started")
    down.add_argument("--dir", default=str(DEFAULT_DIR))
    down.set_defaults(func=_dev_down)
    status = dev.add_parser("status", help="what is running")
    status.add_argument("--dir", default=str(DEFAULT_DIR))
    status.set_defaults(func=_dev_status)

    demo = sub.add_parser("demo", help="the whole story on local clusters: sync, then fail over")
    demo.add_argument("--topology", choices=["two", "three"], default="two")
    demo.add_argument("--dir", default=str(DEFAULT_DIR / "demo"))
    demo.add_argument("--keep", action="store_true", help="leave the environment running afterwards")
    demo.set_defaults(func=_demo)

    crds = sub.add_parser("crds", help="generate the CRD manifests from the models")
    crds.add_argument("--out", default=str(binaries.REPO_ROOT / "k8s" / "crds"))
    crds.set_defaults(func=_crds)

    keys = sub.add_parser("stream-keys", help="print a Secret with a new key that seals Secrets in the stream",
                          description=f"kubectl get secret {settings.STREAM_KEYS_SECRET} -n {settings.NAMESPACE} "
                                      "-o yaml | standby stream-keys --rotate - | kubectl apply -f -")
    keys.add_argument("--id", help="key id (default: k<UTC date-time>)")
    keys.add_argument("--rotate", metavar="SECRET_FILE", help="existing keys Secret (YAML or JSON; - for stdin) "
                                                              "whose keys are kept; the new key becomes active")
    keys.add_argument("--name", default=settings.STREAM_KEYS_SECRET)
    keys.add_argument("--namespace", default=settings.NAMESPACE)
    keys.set_defaults(func=_stream_keys)

    creds = sub.add_parser("nats-credentials", help="print a Secret with a new NATS user and password",
                           description="standby nats-credentials | kubectl apply -f -  (on the sync side, once)")
    creds.add_argument("--user", default="standby")
    creds.add_argument("--name", default=settings.NATS_CREDENTIALS_SECRET)
    creds.add_argument("--namespace", default=settings.NAMESPACE)
    creds.set_defaults(func=_nats_credentials)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
