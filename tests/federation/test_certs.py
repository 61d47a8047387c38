"""District CA, SuperLink certificate and SuperNode keys: made with `cryptography`, checked with
it, in the formats Flower reads."""

from __future__ import annotations

import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

from federation.certs import verify_server_cert, write_district_certs, write_node_keys
from federation.errors import DeploymentError


def test_the_superlink_certificate_is_signed_by_the_district_ca_and_names_its_hosts(tmp_path):
    certs = write_district_certs(tmp_path, hosts=["127.0.0.1", "link.district.example"])

    verify_server_cert(ca_cert=certs.ca_cert, server_cert=certs.superlink_cert, host="127.0.0.1")
    verify_server_cert(
        ca_cert=certs.ca_cert, server_cert=certs.superlink_cert, host="link.district.example"
    )
    with pytest.raises(DeploymentError, match="does not name host 'evil.example'"):
        verify_server_cert(
            ca_cert=certs.ca_cert, server_cert=certs.superlink_cert, host="evil.example"
        )
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # Python's own TLS stack accepts the pair (what a TLS server loads)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.superlink_cert, certs.superlink_key)
    for key in (certs.ca_key, certs.superlink_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_certificate_from_another_ca_is_refused(tmp_path):
    ours = write_district_certs(tmp_path / "ours", hosts=["127.0.0.1"])
    theirs = write_district_certs(tmp_path / "theirs", hosts=["127.0.0.1"])

    with pytest.raises(DeploymentError, match="not signed by the district CA"):
        verify_server_cert(
            ca_cert=ours.ca_cert, server_cert=theirs.superlink_cert, host="127.0.0.1"
        )


def test_keys_are_never_overwritten(tmp_path):
    write_district_certs(tmp_path, hosts=["127.0.0.1"])
    before = (tmp_path / "ca.key").read_bytes()

    with pytest.raises(DeploymentError, match="never overwritten"):
        write_district_certs(tmp_path, hosts=["127.0.0.1"])
    assert (tmp_path / "ca.key").read_bytes() == before


def test_node_keys_are_p384_in_the_openssh_formats_flower_reads(tmp_path):
    private, public = write_node_keys(tmp_path, comment="school-01")

    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    pub = serialization.load_ssh_public_key(public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert isinstance(pub, ec.EllipticCurvePublicKey) and uses_nist_ec_curve(pub)
    assert key.public_key().public_numbers() == pub.public_numbers()
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert public.read_text().rstrip().endswith(" school-01")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
