"""Certificates and keys for a real deployment, made with `cryptography` only.

    district CA (EC P-384, self-signed, CA:true)  ->  SuperLink TLS certificate (serverAuth,
    subjectAltName with the SuperLink's host names and IP addresses)

    SuperNode authentication key: an EC P-384 key pair, the private key in OpenSSH PEM form
    and the public key as an OpenSSH line (the formats `flower-supernode
    --auth-supernode-private-key` and `flwr supernode register` read).

Private keys are written with mode 0600 and never overwritten.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import DeploymentError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SUPERLINK_CERT = "superlink.crt"
SUPERLINK_KEY = "superlink.key"
NODE_KEY = "node.key"
NODE_PUB = "node.pub"


@dataclass(frozen=True)
class DistrictCerts:
    """Where a district's certificates are."""

    ca_cert: Path
    ca_key: Path
    superlink_cert: Path
    superlink_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SchoolFed district"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600; refuse to overwrite an existing key."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DeploymentError(
            f"{path}: a key is already there; it is never overwritten (move it away to make a new one)"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write_district_certs(
    cert_dir: Path, *, hosts: list[str], district: str = "district", days: int = 825
) -> DistrictCerts:
    """A district CA and the SuperLink's TLS certificate for `hosts` (names or IP addresses)."""
    if not hosts:
        raise DeploymentError("the SuperLink certificate needs at least one host name or address")
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"SchoolFed {district} CA"))
        .issuer_name(_name(f"SchoolFed {district} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    link_key = ec.generate_private_key(ec.SECP384R1())
    link_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"SchoolFed {district} SuperLink"))
        .issuer_name(ca_cert.subject)
        .public_key(link_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    certs = DistrictCerts(
        ca_cert=cert_dir / CA_CERT,
        ca_key=cert_dir / CA_KEY,
        superlink_cert=cert_dir / SUPERLINK_CERT,
        superlink_key=cert_dir / SUPERLINK_KEY,
    )
    _write_private(certs.ca_key, _pem_key(ca_key))
    _write_private(certs.superlink_key, _pem_key(link_key))
    certs.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.superlink_cert.write_bytes(link_cert.public_bytes(serialization.Encoding.PEM))
    return certs


def write_node_keys(key_dir: Path, *, comment: str = "") -> tuple[Path, Path]:
    """The SuperNode's authentication key pair: (private key, public key)."""
    key_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key_dir / NODE_KEY
    public = key_dir / NODE_PUB
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public.write_bytes(line + (f" {comment}".encode() if comment else b"") + b"\n")
    return private, public


def verify_server_cert(*, ca_cert: Path, server_cert: Path, host: str) -> None:
    """Check that `server_cert` is signed by the CA, in date and names `host`."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(server_cert.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no message
        raise DeploymentError(
            f"{server_cert}: not signed by the district CA {ca_cert} ({type(exc).__name__})"
        ) from None
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise DeploymentError(
            f"{server_cert}: valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not today"
        )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)] + [
        str(a) for a in sans.get_values_for_type(x509.IPAddress)
    ]
    if host not in names:
        raise DeploymentError(
            f"{server_cert}: does not name host {host!r}; it names {', '.join(names)}"
        )
