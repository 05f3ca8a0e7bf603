"""Our envelopes, as stored and exported, verify with an independent DSSE implementation
(securesystemslib's), and its envelopes verify with ours."""

from __future__ import annotations

import json

from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

from clients.reports import sign_report
from ledger import keys
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from tests.conftest import RunningLedger
from tests.reports import report


def _sslib_key(public_key: bytes) -> SSlibKey:
    return SSlibKey(
        keyid=dsse.key_id(public_key),
        keytype="ed25519",
        scheme="ed25519",
        keyval={"public": public_key.hex()},
    )


def test_logged_envelope_verifies_with_securesystemslib(running: RunningLedger) -> None:
    key = running.parties.arm_monitor
    receipt = running.client.submit(sign_report(report("ARM"), [key])).receipt
    stored = parse_entry(running.client.entry(receipt.index).entry).envelope
    theirs = SslibEnvelope.from_dict(json.loads(stored))
    verified = theirs.verify([_sslib_key(keys.public_bytes(key))], threshold=1)
    assert list(verified) == [dsse.key_id(keys.public_bytes(key))]
    assert theirs.payload_type == "application/vnd.ceasefire.v1.IncidentReport+protobuf"


def test_their_envelope_verifies_with_ours() -> None:
    signer = CryptoSigner.generate_ed25519()
    public = bytes.fromhex(signer.public_key.keyval["public"])
    theirs = SslibEnvelope(
        payload=b"hello world", payload_type="http://example.com/HelloWorld", signatures={}
    )
    theirs.sign(signer)
    ours = dsse.Envelope.from_json(json.dumps(theirs.to_dict()).encode())
    sig = ours.signatures[0]
    # Their key id is their own choice; what matters is that the signature is over the PAE.
    assert dsse.verify_signature(ours, sig, public)
    tampered = dsse.Envelope(ours.payload + b"!", ours.payload_type, ours.signatures)
    assert not dsse.verify_signature(tampered, sig, public)
