"""The real kubectl (built from its Go module by hack/build-kube.sh), as a user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.devenv import binaries


def kubectl(*args: str, kubeconfig: Path | None = None, stdin: str | None = None, timeout: float = 120) -> str:
    """Run kubectl; its output, or an AssertionError with what it said."""
    cmd = [str(binaries.kube_binary("kubectl")), *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []), *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout
