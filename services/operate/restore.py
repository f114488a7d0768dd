"""``standby restore PLAN --at MOMENT``: objects put back into the plan's *source* as they were at
a moment (undo a bad ``kubectl apply``, bring back a deleted namespace).

It writes into the source, so it asks for what a rebuild does not: the caller's own write
credentials for the source (``--source-kubeconfig``; the plan's ManagedCluster credentials are the
watcher's, read-only), checked to reach the plan's source and nothing else; and the changes it
would make (what it creates, what it changes and which fields), printed before anything is
written and confirmed on stdin unless ``--yes``. The objects are written exactly as the source had
them (no deactivation, no ``fromPatch``), in activation's order; objects created since the moment
are left alone. The watcher sees the writes as any other change, so the stand-by follows."""

from __future__ import annotations

import sys
from typing import TextIO

from nats.js import JetStreamContext

from services.common import history, rebuilding
from services.common.keys import StreamKeys
from services.common.kube import KubeClient
from services.operate import output, rebuild


def confirmed(question: str, answers: TextIO, asking: TextIO) -> bool:
    """kubectl-plugin style: ``[y/N]``; no answer (end of input) is no."""
    asking.write(f"{question} [y/N] ")
    asking.flush()
    return answers.readline().strip().lower() in ("y", "yes")


async def restore(own: KubeClient, source: KubeClient, js: JetStreamContext, keys: StreamKeys,
                  req: rebuilding.Request, *, fmt: str, yes: bool, dry_run: bool, stages: output.Stages) -> int:
    """The whole command once its clients are made; its exit code."""
    plan = req.plan
    await rebuilding.refuse_foreign_source(own, plan, source)
    state = await rebuilding.read_state(js, keys, req)
    prepared = await rebuilding.prepare(source, state, req)
    await rebuilding.refuse_unwritable(source, prepared, "the source")
    moment = history.rfc3339(state.at)
    stages.line(f"{plan.key} as of {moment}: {len(state.changes)} objects selected")
    sys.stdout.write(rebuild.render_steps(prepared.steps, fmt))
    writes = [s for s in prepared.steps if s.action in ("create", "update")]
    if not writes or dry_run:
        return output.OK
    question = f"Write these {len(writes)} objects into the source cluster as of {moment}?"
    if not yes and not confirmed(question, sys.stdin, sys.stderr):
        stages.line("nothing written")
        return output.NOT_MET

    done = 0

    async def step_done(outcome: rebuilding.Outcome) -> None:
        nonlocal done
        done += 1
        stages.progress(done, len(prepared.steps), "restoring")
    outcomes = await rebuilding.execute(source, prepared, progress=step_done)
    counted = rebuilding.counts(outcomes)
    stages.line(f"restored: {counted['create']} created, {counted['update']} updated, {counted['failed']} failed")
    sys.stdout.write(rebuild.render_outcomes(outcomes))
    return output.NOT_MET if counted["failed"] else output.OK
