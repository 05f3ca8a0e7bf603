"""What a statement's rules see when an entry is judged: the key state and the log's
clock at its index, who signed it, and the earlier subjects it may name (incidents,
findings, investigations, notices and hotline messages) as they stood before it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.errors import FailedPrecondition, InvalidArgument
from ledger.findings import FindingInfo
from ledger.incidents import IncidentInfo
from ledger.investigations import InvestigationInfo
from ledger.messages import MessageInfo
from ledger.trust import KeyInfo, TrustState

Subject = IncidentInfo | FindingInfo | InvestigationInfo | MessageInfo
# The subject at a log index as of the entries before the one being judged (None: none).
Lookup = Callable[[int], Subject | None]


def nothing(_index: int) -> Subject | None:
    return None


@dataclass(frozen=True)
class Context:
    # The key state before the entry.
    state: TrustState
    index: int
    # The log's clock at integration (never the signer's).
    now_us: int
    # The party the statement speaks for, as authorized.
    party: str
    signers: tuple[KeyInfo, ...]
    # Their key ids (for a subject rebuilt from stored links, the ids alone).
    signer_ids: frozenset[str]
    lookup: Lookup
    # What attestations name: the SHA-256 (hex) of the statement's payload bytes.
    payload_sha256: str
    # Whether a finding's attestations so far meet its policy, judged at this index.
    meets: Callable[[FindingInfo], bool]

    def get(self, target: int) -> Subject | None:
        return self.lookup(target) if 0 < target < self.index else None

    def incident(self, target: int, field: str, *, open_only: bool = False) -> IncidentInfo:
        info = self.get(target)
        if not isinstance(info, IncidentInfo):
            raise InvalidArgument(f"entry {target} is not an incident report", field=field)
        if open_only and info.retracted_at is not None:
            raise InvalidArgument(
                f"entry {target} was retracted at index {info.retracted_at}", field=field
            )
        return info

    def finding(self, target: int, field: str = "finding_index") -> FindingInfo:
        info = self.get(target)
        if not isinstance(info, FindingInfo):
            raise InvalidArgument(f"entry {target} is not a finding draft", field=field)
        return info

    def investigation(
        self, target: int, field: str = "investigation_index", *, agreed: bool = False
    ) -> InvestigationInfo:
        info = self.get(target)
        if not isinstance(info, InvestigationInfo):
            raise InvalidArgument(f"entry {target} is not an investigation request", field=field)
        if agreed and info.terms is None:
            raise FailedPrecondition(f"investigation {target} has no agreed terms yet", field=field)
        return info
