"""The ``standby`` command: the operator's view and actions (``status``, ``failover``), and the
one-time Secrets and cluster registrations of an install.

The development commands (``standby dev``, ``demo``, ``crds``) are added when the development
tooling is installed (``services.devenv``, a checkout's ``pip install -e .[dev]``); the production
image leaves it out, and the services never import it (an import-linter contract)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from schemas import API_VERSION, durations
from services.common import settings

NEGATIVE_DURATION = re.compile(r"^-((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)?)+$")
DEV_COMMANDS = "services.devenv.cli"  # imported by name: it is absent from the production image


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


def broker_password() -> str:
    """A random password the broker's configuration reads as a string. nats-server resolves
    ``$NATS_PASSWORD`` by parsing its value, and a value that begins with digits may be taken for a
    number or a date ("1.x...", "12-x...": token_urlsafe makes those) and refused: the broker would
    never start (nats-io/nats-server#3431). So a letter first, then letters and digits (43
    characters, ~256 bits)."""
    import secrets
    import string

    alphanumeric = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(secrets.choice(alphanumeric) for _ in range(42))


def _nats_credentials(args: argparse.Namespace) -> int:
    """Print the Secret the broker and the services read their NATS user and password from (the
    shipped manifests name it: `standby-nats`, keys NATS_USER and NATS_PASSWORD)."""
    import base64

    data = {"NATS_USER": args.user, "NATS_PASSWORD": broker_password()}
    print(json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": args.name, "namespace": args.namespace,
                     "labels": {"app.kubernetes.io/part-of": "standby"}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}, indent=2))
    return 0


def _admin_kubeconfig(args: argparse.Namespace) -> Path:
    """kubectl's rule: --kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config."""
    if args.kubeconfig:
        return Path(args.kubeconfig)
    env = os.environ.get("KUBECONFIG", "")
    return Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"


def _managed_cluster(args: argparse.Namespace) -> int:
    """Mint a token for a ServiceAccount in the cluster to register (the current context of the
    caller's kubeconfig) and print the Secret and ManagedCluster to apply on the sync side."""
    from services.common import kube, kubeconfigs

    namespace, _, account = args.service_account.rpartition("/")
    if not namespace or not account:
        print(f"--service-account {args.service_account!r}: give NAMESPACE/NAME", file=sys.stderr)
        return 2
    try:
        seconds = int(durations.parse(args.duration))
        creds = kube.credentials_from_kubeconfig(_admin_kubeconfig(args), context=args.context)
    except (ValueError, OSError) as exc:
        print(f"standby managed-cluster: {exc}", file=sys.stderr)
        return 2

    async def mint() -> Any:
        async with kube.KubeClient(creds, user_agent="standby-cli") as client:
            return await kubeconfigs.mint_token(client, namespace, account, seconds=seconds)

    try:
        token, expires = asyncio.run(mint())
    except (kubeconfigs.MintError, kube.ApiError, kube.UnreachableError, OSError) as exc:
        print(f"standby managed-cluster: {exc}", file=sys.stderr)
        return 2
    config = kubeconfigs.for_token(args.name, server=(args.server or creds.server).rstrip("/"), ca_pem=creds.ca_pem,
                                   token=token, namespace=namespace, insecure=creds.insecure)
    stamp = expires.isoformat().replace("+00:00", "Z")
    if args.output == "kubeconfig":
        import yaml

        print(yaml.safe_dump(config, sort_keys=False), end="")
    else:
        items = kubeconfigs.managed_cluster(args.name, config, namespace=args.namespace, annotations={
            "standby.dev/service-account": f"{namespace}/{account}", "standby.dev/token-expires": stamp})
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    print(f"token for {namespace}/{account} expires {stamp}; run this again before then", file=sys.stderr)
    return 0


def _client(args: argparse.Namespace) -> Any:
    """A client for the cluster the caller's kubeconfig and context name."""
    from services.common import kube
    from services.operate.output import CommandError

    path = _admin_kubeconfig(args)
    try:
        creds = kube.credentials_from_kubeconfig(path, context=args.context)
    except (ValueError, OSError) as exc:
        raise CommandError(f"kubeconfig {path}: {exc}") from exc
    return kube.KubeClient(creds, user_agent="standby-cli")


def _status(args: argparse.Namespace) -> int:
    from services.operate import status

    async def run() -> int:
        async with _client(args) as client:
            report = await status.gather(client, args.namespace, args.plan,
                                         services_namespace=args.services_namespace)
        sys.stdout.write(report.render(args.output))
        return report.exit_code

    return asyncio.run(run())


def _failover(args: argparse.Namespace) -> int:
    from services.operate import failover, output

    if bool(args.plans) == bool(args.execution_plan):
        raise output.CommandError("name the plans to fail over, or --execution-plan NAME (not both)")
    try:
        timeout = durations.parse(args.timeout)
        wait_seconds = int(durations.parse(args.ready_timeout))
    except ValueError as exc:
        raise output.CommandError(str(exc)) from exc
    stages = output.Stages()

    async def run() -> int:
        async with _client(args) as client:
            name = await failover.start(client, args.namespace, plans=args.plans, execution_plan=args.execution_plan,
                                        dry_run=args.dry_run, wait_seconds=wait_seconds, stages=stages)
            print(f"recoveryexecutionjob.dr.standby.dev/{name}")
            if not args.wait:
                return output.OK
            code, last = await failover.follow(client, args.namespace, name, timeout=timeout, stages=stages)
            if last is not None:
                sys.stdout.write(failover.results(last))
            return code

    return asyncio.run(run())


def _dlq(args: argparse.Namespace) -> int:
    import datetime

    from services.operate import output, requests

    async def run() -> int:
        async with _client(args) as client:
            if args.action in ("list", "show"):
                plan = await requests.get_plan(client, args.namespace, args.plan)
                if args.action == "show":
                    if not args.ref:
                        raise output.CommandError("standby dlq show PLAN REF (REF as `standby dlq list` shows it)")
                    sys.stdout.write(requests.show(plan, args.ref))
                    return output.OK
                sys.stdout.write(requests.dead_letter_table(plan, args.output, datetime.datetime.now(datetime.UTC)))
                return output.OK if not requests.dead_letters(plan)[1] else output.NOT_MET
            return await _ask(client, args, args.action)

    return asyncio.run(run())


def _breaker(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with _client(args) as client:
            return await _ask(client, args, "reset")

    return asyncio.run(run())


async def _ask(client: Any, args: argparse.Namespace, action: str) -> int:
    """Annotate the plan for ``action``; with --wait, follow its status until the syncer answered."""
    from services.operate import output, requests

    try:
        timeout = durations.parse(args.timeout)
    except ValueError as exc:
        raise output.CommandError(str(exc)) from exc
    stages = output.Stages()
    token, before = await requests.request(client, args.namespace, args.plan, requests.ANNOTATIONS[action])
    stages.line(f"recoveryplan {args.plan} annotated {requests.ANNOTATIONS[action]}={token}")
    if not args.wait:
        return output.OK
    settled = int((before.get("status") or {}).get("streamSequence") or 0)
    done = {"retry": requests.retried(settled), "purge": requests.purged, "reset": requests.breaker_closed}[action]
    code = await requests.wait_for(client, args.namespace, args.plan, done, timeout=timeout)
    stages.line({output.OK: "done", output.NOT_MET: "failed again: standby dlq list " + args.plan,
                 output.TIMEOUT: f"timed out after {timeout:.0f}s"}[code])
    return code


def _history(args: argparse.Namespace) -> int:
    from schemas import subjects
    from services.common import history as stream_history
    from services.common import keys as stream_keys
    from services.operate import broker, history, output, requests

    try:
        key = subjects.parse_ref(args.ref)
    except subjects.SubjectError as exc:
        raise output.CommandError(str(exc)) from exc

    async def run() -> int:
        async with _client(args) as client:
            await requests.get_plan(client, args.namespace, args.plan)
            nc = await broker.connect(client, args.namespace, args.nats_url)
            try:
                js = nc.jetstream()
                stream = subjects.stream_name(args.namespace, args.plan)
                found = await stream_history.object_states(
                    js, stream, subjects.object_filter(args.subject_prefix, args.namespace, args.plan, key))
                keys = stream_keys.StreamKeys(client, args.namespace, settings.STREAM_KEYS_SECRET)
                shown = await history.states(found, keys.decode)
            finally:
                await nc.close()
        if not shown:
            raise output.CommandError(f"the stream of {args.plan} holds no state of {args.ref}")
        sys.stdout.write(history.render(shown, args.output))
        return output.OK

    return asyncio.run(run())


def _rebuild(args: argparse.Namespace) -> int:
    from services.common import keys as stream_keys
    from services.common import rebuilding
    from services.operate import broker, output, rebuild, requests

    req_at = rebuild.parse_moment(args.at, time.time())
    selection = _selection(args)
    mode: rebuilding.Mode = "Active" if args.active else "Deactivated"
    stages = output.Stages()

    async def through_the_cluster() -> int:
        """Create a Rebuild (the syncer runs it); with --wait, follow it."""
        try:
            timeout = durations.parse(args.timeout)
        except ValueError as exc:
            raise output.CommandError(str(exc)) from exc
        async with _client(args) as client:
            await requests.get_plan(client, args.namespace, args.plan)
            body = rebuild.resource(args.plan, at=req_at, target_cluster=args.target_cluster, active=args.active,
                                    selection=selection, prune=args.prune, dry_run=args.dry_run)
            made = await client.request("POST", f"/apis/{API_VERSION}/namespaces/{args.namespace}/rebuilds", body=body)
            name = made["metadata"]["name"]
            print(f"rebuild.dr.standby.dev/{name} created")
            if not args.wait:
                return output.OK
            code, status = await rebuild.follow(client, args.namespace, name, timeout=timeout, stages=stages)
        if status is not None and code != output.TIMEOUT:
            sys.stdout.write(rebuild.render_results(status, args.output))
        if code == output.ERROR and status is not None:
            raise output.CommandError(status.message)
        return code

    async def run() -> int:
        async with _client(args) as client:
            nc = await broker.connect(client, args.namespace, args.nats_url)
            try:
                plan, record = await requests.plan_or_record(client, nc.jetstream(), args.namespace, args.plan,
                                                             args.subject_prefix)
            except output.CommandError:
                await nc.close()
                raise
            if record is not None:
                when = f"{record.recorded_at:%Y-%m-%dT%H:%M:%SZ}"
                stages.line(f"recoveryplan {args.namespace}/{args.plan} is not in this cluster: the plan as its "
                            f"stream recorded it (generation {plan.generation}, {when}), rebuilt into this cluster")
            req = rebuilding.Request(plan, req_at, mode, selection, args.prune, args.subject_prefix,
                                     plan_in_cluster=record is None)
            keys = stream_keys.StreamKeys(client, args.namespace, settings.STREAM_KEYS_SECRET)

            async def say(text: str) -> None:
                stages.line(text)

            async def step_done(outcome: Any, done: int, total: int) -> None:
                stages.progress(done, total, "rebuilding")
            try:
                done = await rebuilding.rebuild(client, nc.jetstream(), keys, req, target_cluster=args.target_cluster,
                                                dry_run=args.dry_run, say=say, step_done=step_done)
            except rebuilding.RebuildError as exc:
                raise output.CommandError(str(exc)) from exc
            finally:
                await nc.close()
        if done.outcomes is None:
            sys.stdout.write(rebuild.render_steps(done.prepared.steps, args.output))
            return output.OK
        counted = rebuilding.counts(done.outcomes)
        stages.line(", ".join(f"{n} {what}" for what, n in counted.items()))
        sys.stdout.write(rebuild.render_outcomes(done.outcomes))
        return output.NOT_MET if counted["failed"] else output.OK

    return asyncio.run(run() if args.direct else through_the_cluster())


def _selection(args: argparse.Namespace) -> Any:
    from schemas import rebuilds
    from services.operate import output, rebuild

    def listed(text: str | None) -> list[str]:
        return [part for part in (text or "").split(",") if part]
    try:
        return rebuilds.Selection.of(namespaces=listed(args.namespaces), resources=listed(args.resources),
                                     names=listed(args.names), labels=rebuild.parse_labels(args.selector))
    except rebuilds.SelectionError as exc:
        raise output.CommandError(str(exc)) from exc


def _restore(args: argparse.Namespace) -> int:
    from services.common import keys as stream_keys
    from services.common import kube, rebuilding
    from services.operate import broker, output, rebuild, requests, restore

    at = rebuild.parse_moment(args.at, time.time())
    selection = _selection(args)
    try:
        creds = kube.credentials_from_kubeconfig(Path(args.source_kubeconfig), context=args.source_context)
    except (ValueError, OSError) as exc:
        raise output.CommandError(f"--source-kubeconfig {args.source_kubeconfig}: {exc}") from exc

    async def run() -> int:
        async with _client(args) as client, kube.KubeClient(creds, user_agent="standby-cli") as source:
            plan = await requests.parsed_plan(client, args.namespace, args.plan)
            req = rebuilding.Request(plan, at, "Original", selection, prefix=args.subject_prefix)
            nc = await broker.connect(client, args.namespace, args.nats_url)
            keys = stream_keys.StreamKeys(client, args.namespace, settings.STREAM_KEYS_SECRET)
            try:
                return await restore.restore(client, source, nc.jetstream(), keys, req, fmt=args.output,
                                             yes=args.yes, dry_run=args.dry_run, stages=output.Stages())
            except rebuilding.RebuildError as exc:
                raise output.CommandError(str(exc)) from exc
            finally:
                await nc.close()

    return asyncio.run(run())


def _diff(args: argparse.Namespace) -> int:
    from services.common import keys as stream_keys
    from services.common import rebuilding
    from services.operate import broker, diff, output, requests

    async def against_stream(client: Any) -> list[Any]:
        plan = await requests.parsed_plan(client, args.namespace, args.plan)
        nc = await broker.connect(client, args.namespace, args.nats_url)
        keys = stream_keys.StreamKeys(client, args.namespace, settings.STREAM_KEYS_SECRET)
        try:
            return await diff.against_stream(client, nc.jetstream(), keys, plan, args.subject_prefix)
        except rebuilding.RebuildError as exc:
            raise output.CommandError(str(exc)) from exc
        finally:
            await nc.close()

    async def run() -> int:
        async with _client(args) as client:
            if args.against == "stream":
                differences = await against_stream(client)
            else:
                differences = await diff.gather(client, args.namespace, args.plan)
        sys.stdout.write(diff.render(differences, args.output, args.against))
        return output.NOT_MET if differences else output.OK

    return asyncio.run(run())


def _operating(parser: argparse.ArgumentParser, *, formats: bool = False) -> None:
    """kubectl's connection flags, on every command that talks to a cluster."""
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("-n", "--namespace", default=settings.NAMESPACE, help="of the plans and jobs")
    if formats:
        parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


def _streaming(parser: argparse.ArgumentParser) -> None:
    """Flags of the commands that read the stream."""
    parser.add_argument("--nats-url", help="the broker (default: $STANDBY_NATS_URL, else nats://127.0.0.1:4222); "
                                           "its user and password: $STANDBY_NATS_USER and $STANDBY_NATS_PASSWORD, "
                                           "else the standby-nats Secret")
    parser.add_argument("--subject-prefix", default="standby", help=argparse.SUPPRESS)


def _moment(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """``--at``; without a default, required. argparse takes a value that starts with "-" for an
    option unless it looks like a negative number; these parsers have no option that does, so a
    negative duration (``--at -15m``) is one too."""
    parser._negative_number_matcher = NEGATIVE_DURATION
    parser.add_argument("--at", required=default is None,
                        help="RFC 3339 (2026-11-29T10:15:00Z, inclusive) or a negative duration (-15m)"
                             + (f"; default: {default}" if default else ""))


def _selecting(parser: argparse.ArgumentParser) -> None:
    """A part of a plan (every part given must match)."""
    parser.add_argument("--namespaces", help="only these namespaces (comma-separated)")
    parser.add_argument("--resources", help="only these resources: deployments.apps,configmaps")
    parser.add_argument("--names", help="only objects of these names (comma-separated)")
    parser.add_argument("-l", "--selector", help="only objects with these labels: key=value,...")


def _waiting(parser: argparse.ArgumentParser, follows: str = "the plan's status until the syncer answered") -> None:
    parser.add_argument("--wait", action="store_true", help=f"follow {follows}")
    parser.add_argument("--timeout", default="2m", help="with --wait: give up after this (default 2m)")


EXIT_CODES = """exit codes: 0 done, nothing to report; 1 a condition not met (a plan not protecting, a cluster
not Ready, a failover that did not complete); 2 an error (bad input, an unusable cluster);
3 --timeout passed first"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="standby", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    st = sub.add_parser("status", help="is each plan protecting, can each cluster be used", epilog=EXIT_CODES,
                        description="Per plan: phase, source reachable and last heard, how far behind, objects in "
                                    "and out of sync, dead letters, delete breaker, fence, the watcher and syncer "
                                    "replicas serving it; per ManagedCluster: Ready and why, version, last probe.")
    st.add_argument("plan", nargs="?", help="one plan (default: every plan in the namespace)")
    st.add_argument("--services-namespace", help="where the watcher and syncer run, holding the plans' Leases "
                                                 "(default: the plans' namespace)")
    _operating(st, formats=True)
    st.set_defaults(func=_status)

    fo = sub.add_parser("failover", help="fail over plans now (a RecoveryExecutionJob), and follow it",
                        epilog=EXIT_CODES, description="standby failover shop --wait   |   "
                                                       "standby failover --execution-plan region-loss --wait")
    fo.add_argument("plans", nargs="*", help="plans to fail over together (one wave, waiting for readiness)")
    fo.add_argument("--execution-plan", help="an existing RecoveryExecutionPlan (its waves, in order)")
    fo.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    fo.add_argument("--wait", action="store_true", help="follow the job to its end; exit 0 only if it Completed")
    fo.add_argument("--timeout", default="10m", help="with --wait: give up following after this (default 10m)")
    fo.add_argument("--ready-timeout", default="5m", help="plans given by name: how long the wave waits for "
                                                          "readiness (default 5m)")
    _operating(fo)
    fo.set_defaults(func=_failover)

    df = sub.add_parser("diff", help="the source against the stand-by, object by object", epilog=EXIT_CODES,
                        description="missing (no copy), extra (a copy whose source is gone), different (which "
                                    "fields), ignoring exactly the deactivation, the server-set fields and "
                                    "Standby's bookkeeping; exit 1 when anything differs. With the source gone, "
                                    "--against stream compares the stand-by with the stream's latest states.")
    df.add_argument("plan")
    df.add_argument("--against", choices=["source", "stream"], default="source",
                    help="what the stand-by is compared with (default: the source cluster)")
    _streaming(df)
    _operating(df, formats=True)
    df.set_defaults(func=_diff)

    hist = sub.add_parser("history", help="the states the stream holds of one object", epilog=EXIT_CODES,
                          description="Oldest first: when stored, the event, the source's resourceVersion, the stream "
                                      "sequence and the fields changed since the state before; -o json|yaml adds "
                                      "each state (a Secret's values as fingerprints). Reads the stream: "
                                      "--nats-url, or `kubectl port-forward -n standby-system svc/nats 4222`.")
    hist.add_argument("plan")
    hist.add_argument("ref", help="the object: resource.group/namespace/name, e.g. deployments.apps/shop/web")
    _streaming(hist)
    _operating(hist, formats=True)
    hist.set_defaults(func=_history)

    rb = sub.add_parser("rebuild", help="a plan's objects as of a moment, from its stream into a cluster",
                        epilog=EXIT_CODES,
                        description="A Rebuild, run by the syncer (or, with --direct, by this command): "
                                    "from the plan's stream into the live stand-by (default) or --target-cluster "
                                    "(a ManagedCluster), deactivated (a stand-by) or --active (a restore), the "
                                    "whole plan or a part, as of now or --at. CRDs and namespaces first. "
                                    "Rebuilding the live stand-by pauses the plan and resumes it. Objects the "
                                    "rebuilt state does not hold are removed only with --prune, and only the "
                                    "plan's copies.")
    rb.add_argument("plan")
    _moment(rb, default="now")
    rb.add_argument("--target-cluster", help="a ManagedCluster (default: the plan's stand-by)")
    rb.add_argument("--active", action="store_true", help="write the objects active (a restore), not deactivated")
    _selecting(rb)
    rb.add_argument("--prune", action="store_true", help="remove the plan's copies the rebuilt state does not hold")
    rb.add_argument("--dry-run", action="store_true", help="print what would be created, changed and deleted")
    rb.add_argument("--direct", action="store_true",
                    help="run it in this command, reading the stream (--nats-url), instead of creating a Rebuild "
                         "for the syncer to run")
    _waiting(rb, follows="the Rebuild until it ends")
    _streaming(rb)
    _operating(rb, formats=True)
    rb.set_defaults(func=_rebuild)

    rs = sub.add_parser("restore", help="objects back into the plan's source as they were at a moment",
                        epilog=EXIT_CODES,
                        description="Undo a bad apply or a deletion in the source: the plan's objects (or a part) "
                                    "as of --at, from its stream, written exactly as the source had them with the "
                                    "write credentials of --source-kubeconfig (checked to reach the plan's source). "
                                    "Prints what it would create and change first and asks for confirmation "
                                    "unless --yes; objects created since are left alone.")
    rs.add_argument("plan")
    _moment(rs)
    rs.add_argument("--source-kubeconfig", required=True, help="credentials that can write to the source cluster")
    rs.add_argument("--source-context", help="its context (default: the current one)")
    _selecting(rs)
    rs.add_argument("--dry-run", action="store_true", help="print what would be created and changed, and stop")
    rs.add_argument("--yes", action="store_true", help="write without asking")
    _streaming(rs)
    _operating(rs, formats=True)
    rs.set_defaults(func=_restore)

    dlq = sub.add_parser("dlq", help="a plan's dead letters: list, show, retry, purge", epilog=EXIT_CODES,
                         description="list: the objects whose last change failed, and why (exit 1 if any); show: "
                                     "one in full; retry: publish their failed changes again (after fixing the "
                                     "cause); purge: accept them (the syncer forgets them, the stream drops them)")
    dlq.add_argument("action", choices=["list", "show", "retry", "purge"])
    dlq.add_argument("plan")
    dlq.add_argument("ref", nargs="?", help="show: the object, as `list` shows it")
    _waiting(dlq)
    _operating(dlq, formats=True)
    dlq.set_defaults(func=_dlq)

    breaker = sub.add_parser("breaker", help="a plan's delete breaker: reset it (let the held deletions through)",
                             epilog=EXIT_CODES)
    breaker.add_argument("action", choices=["reset"])
    breaker.add_argument("plan")
    _waiting(breaker)
    _operating(breaker)
    breaker.set_defaults(func=_breaker)
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

    mc = sub.add_parser(
        "managed-cluster", help="print a ManagedCluster and its kubeconfig Secret for a ServiceAccount's token",
        description="Run against the cluster to register (its RBAC applied), apply the output on the sync side: "
                    "standby managed-cluster source --service-account standby-system/standby-reader "
                    "--context source | kubectl --context management apply -f -")
    mc.add_argument("name", help="the ManagedCluster's name (plans refer to it)")
    mc.add_argument("--service-account", required=True, metavar="NAMESPACE/NAME",
                    help="whose token the kubeconfig holds (k8s/source/reader.yaml, k8s/destination/writer.yaml)")
    mc.add_argument("--kubeconfig", help="of the cluster to register (default: $KUBECONFIG, ~/.kube/config)")
    mc.add_argument("--context", help="kubeconfig context (default: the current one)")
    mc.add_argument("--server", help="API server URL as the sync side reaches it (default: the context's)")
    mc.add_argument("--duration", default="8760h", help="token lifetime, a Go duration (default: 8760h)")
    mc.add_argument("-n", "--namespace", default=settings.NAMESPACE, help="where the sync side keeps them")
    mc.add_argument("-o", "--output", choices=["json", "kubeconfig"], default="json")
    mc.set_defaults(func=_managed_cluster)

    try:  # the development commands, where the tooling is installed
        importlib.import_module(DEV_COMMANDS).add_commands(sub)
    except ModuleNotFoundError as exc:
        if exc.name is None or not DEV_COMMANDS.startswith(exc.name):
            raise
    return parser


def main(argv: list[str] | None = None) -> int:
    from services.common.kube import ApiError, UnreachableError
    from services.operate.output import ERROR, CommandError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CommandError, ApiError, UnreachableError) as exc:
        print(f"standby: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
