"""The formats that must not drift (docs/formats.md), each checked against its spec's
known answers: DSSE envelopes (`dsse`), RFC 6962/9162 Merkle trees and proofs (`merkle`),
C2SP signed notes and checkpoints (`note`), C2SP tlog-cosignature v1 (`cosignature`), and
the log entry that is each Merkle leaf (`log_entry`). Pure: no storage, no serving."""
