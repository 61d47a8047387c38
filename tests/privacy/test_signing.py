import json
import stat

import pytest

from privacy.signing import (
    SignatureError,
    generate_keypair,
    key_id,
    load_public_key,
    sign_file,
    signature_path,
    verify_file,
)


@pytest.fixture
def keys(tmp_path):
    return generate_keypair(tmp_path / "keys", name="officer")


@pytest.fixture
def document(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"policy_id: test\nepsilon: 3.0\n")
    return path


def test_keygen_writes_a_private_key_only_its_owner_can_read(keys):
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(SignatureError, match="already exists; a key is never overwritten"):
        generate_keypair(private.parent, name="officer")


def test_sign_then_verify(keys, document):
    private, public = keys
    sig = sign_file(document, key=private)
    assert sig == signature_path(document)
    record = json.loads(sig.read_text())
    assert record["algorithm"] == "Ed25519"
    assert record["key_id"] == key_id(load_public_key(public))
    assert verify_file(document, pubkey=public).key_id == record["key_id"]


def test_unsigned_is_refused(keys, document):
    with pytest.raises(SignatureError, match="unsigned"):
        verify_file(document, pubkey=keys[1])


def test_every_one_byte_edit_is_caught(keys, document):
    sign_file(document, key=keys[0])
    original = document.read_bytes()
    for position in range(len(original)):
        changed = bytearray(original)
        changed[position] ^= 0x01
        document.write_bytes(bytes(changed))
        with pytest.raises(SignatureError, match="changed after it was signed"):
            verify_file(document, pubkey=keys[1])
    document.write_bytes(original + b"\n")
    with pytest.raises(SignatureError, match="changed after it was signed"):
        verify_file(document, pubkey=keys[1])


def test_another_key_is_refused(tmp_path, keys, document):
    other_private, _ = generate_keypair(tmp_path / "other", name="mallory")
    sign_file(document, key=other_private)
    with pytest.raises(SignatureError, match="signed by another key"):
        verify_file(document, pubkey=keys[1])


def test_a_mangled_signature_file_is_refused(keys, document):
    sign_file(document, key=keys[0])
    signature_path(document).write_text("{not json")
    with pytest.raises(SignatureError, match="not a readable signature file"):
        verify_file(document, pubkey=keys[1])


def test_keys_that_are_not_keys(tmp_path, document):
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("hello")
    with pytest.raises(SignatureError, match="not a PEM public key"):
        verify_file(document, pubkey=bogus)
    with pytest.raises(SignatureError, match="not found"):
        sign_file(document, key=tmp_path / "missing.key")
