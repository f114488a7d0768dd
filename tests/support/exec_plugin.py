"""A client.authentication.k8s.io/v1 exec credential plugin, as EKS, GKE and AKS ship them: it mints
a real token for a ServiceAccount (TokenRequest) and says it expires after STANDBY_TEST_EXPIRES_SECONDS
(shorter than the token itself, so that a client must run it again). Counts its runs in a file; with
STANDBY_TEST_FIRST_BAD set, its first answer is a token the API server refuses (a 401)."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])  # what a real client sets
    count_file = Path(os.environ["STANDBY_TEST_COUNT_FILE"])
    runs = int(count_file.read_text()) if count_file.exists() else 0
    count_file.write_text(str(runs + 1))
    namespace, name = os.environ["STANDBY_TEST_SA"].split("/")
    request = urllib.request.Request(
        f"{os.environ['STANDBY_TEST_SERVER']}/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        method="POST", data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                        "spec": {"expirationSeconds": 600}}).encode(),
        headers={"Authorization": f"Bearer {os.environ['STANDBY_TEST_ADMIN_TOKEN']}",
                 "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=os.environ["STANDBY_TEST_CA"])
    with urllib.request.urlopen(request, context=context, timeout=10) as resp:
        token = json.loads(resp.read())["status"]["token"]
    if os.environ.get("STANDBY_TEST_FIRST_BAD") and runs == 0:
        token = "not-a-token"
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        seconds=float(os.environ.get("STANDBY_TEST_EXPIRES_SECONDS", "600")))
    json.dump({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
               "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
