"""Certificates and keys the throwaway environments need, each set under its own CA so that nothing
trusts anything else: a cluster's (the API server's serving certificate, the service-account
signing key) and the NATS servers' (one certificate for client connections and routes, and one
client certificate for the services)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass(frozen=True)
class ClusterPki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


@dataclass(frozen=True)
class NatsPki:
    ca_cert: Path
    server_cert: Path  # client connections and routes (a route is a client and a server at once)
    server_key: Path
    client_cert: Path  # for services, when the server asks for client certificates
    client_key: Path


@dataclass(frozen=True)
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=365)


def _ca(common_name: str) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _Ca(key, cert)


def _leaf(ca: _Ca, common_name: str, usages: list[x509.ObjectIdentifier],
          sans: list[x509.GeneralName] | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def generate(directory: Path, *, cluster: str) -> ClusterPki:
    """Write a fresh PKI for one cluster into ``directory`` (idempotent: existing files are kept)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = ClusterPki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    if all(p.exists() for p in (pki.ca_cert, pki.serving_cert, pki.serving_key, pki.sa_key, pki.sa_pub)):
        return pki
    ca = _ca(f"standby-dev-{cluster}-ca")
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(LOOPBACK),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    serving_cert, serving_key = _leaf(ca, "kube-apiserver", [ExtendedKeyUsageOID.SERVER_AUTH], sans)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.ca_cert, _pem_cert(ca.cert))
    _write(directory / "ca.key", _pem_key(ca.key))
    _write(pki.serving_cert, _pem_cert(serving_cert))
    _write(pki.serving_key, _pem_key(serving_key))
    _write(pki.sa_key, _pem_key(sa_key))
    _write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def generate_nats(directory: Path) -> NatsPki:
    """Write a fresh PKI for the local NATS servers into ``directory`` (idempotent): every node
    presents the same certificate, valid for the loopback address it listens on, to clients and
    to the other nodes' routes."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = NatsPki(ca_cert=directory / "ca.crt", server_cert=directory / "server.crt",
                  server_key=directory / "server.key", client_cert=directory / "client.crt",
                  client_key=directory / "client.key")
    if all(p.exists() for p in (pki.ca_cert, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key)):
        return pki
    ca = _ca("standby-dev-nats-ca")
    server_cert, server_key = _leaf(
        ca, "nats", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [x509.DNSName("localhost"), x509.IPAddress(LOOPBACK)])
    client_cert, client_key = _leaf(ca, "standby", [ExtendedKeyUsageOID.CLIENT_AUTH])
    _write(pki.ca_cert, _pem_cert(ca.cert))
    _write(directory / "ca.key", _pem_key(ca.key))
    _write(pki.server_cert, _pem_cert(server_cert))
    _write(pki.server_key, _pem_key(server_key))
    _write(pki.client_cert, _pem_cert(client_cert))
    _write(pki.client_key, _pem_key(client_key))
    return pki
