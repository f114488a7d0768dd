"""Credentials loaded without writing anything: the services run with a read-only root filesystem."""

from __future__ import annotations

import datetime
import errno
import tempfile
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.common import kube, tokens

pytestmark = pytest.mark.unit


def client_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "standby-syncer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_a_client_certificate_is_loaded_without_a_writable_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    cert, key = client_pair()
    creds = kube.Credentials(server="https://127.0.0.1:6443", ca_pem=None, token=None, client_cert_pem=cert,
                             client_key_pem=key)
    ctx = kube._ssl_context(creds)
    assert not isinstance(ctx, bool)


@pytest.mark.parametrize(("out", "expected"), [
    pytest.param(b'{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", '
                 b'"status": {"token": "t", "expirationTimestamp": "2026-11-29T10:15:00Z"}}',
                 ("t", datetime.datetime(2026, 11, 29, 10, 15, tzinfo=datetime.UTC).timestamp()), id="expiring"),
    pytest.param(b'{"status": {"token": "t"}}', ("t", None), id="until-refused"),
])
def test_exec_credentials_are_read(out: bytes, expected: tuple[str, float | None]) -> None:
    assert tokens.parse_exec_credential(out) == expected


@pytest.mark.parametrize(("out", "says"), [
    pytest.param(b"oops", "printed no ExecCredential", id="not-json"),
    pytest.param(b'{"status": {}}', "returned no token", id="no-token"),
    pytest.param(b'{"status": {"clientCertificateData": "x", "clientKeyData": "y"}}', "client certificate",
                 id="certificate"),
    pytest.param(b'{"status": {"token": "t", "expirationTimestamp": "tomorrow"}}', "expirationTimestamp",
                 id="bad-expiry"),
])
def test_a_plugin_answer_that_cannot_be_used_is_a_clear_error(out: bytes, says: str) -> None:
    with pytest.raises(tokens.CredentialError, match=says):
        tokens.parse_exec_credential(out, "aws")


def test_a_legacy_auth_provider_is_refused_with_what_to_use_instead() -> None:
    config = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
              "clusters": [{"name": "c", "cluster": {"server": "https://gke.example:443"}}],
              "users": [{"name": "u", "user": {"auth-provider": {"name": "gcp", "config": {}}}}]}
    with pytest.raises(kube.ConfigError, match="auth-provider 'gcp' is not supported: use an exec credential plugin"):
        kube.credentials_from_kubeconfig(config)
