"""`ceasefire investigation | notice | hotline`: joint investigations of incidents, advance
notices of sensitive activity, and the hotline between the parties.

The terms of an investigation need the authority threshold of every party to it: one party
drafts and signs them with --out, the others add theirs (`ceasefire cosign FILE`), the last
sends the file (`ceasefire submit FILE`). A request and the terms may be written in a YAML
file (docs/investigations.md), read strictly: a misspelt field is refused, naming the file
and the field, before anything is signed. `investigation next` says where an investigation
stands, who must act, and the command to run.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

from clients import signing, user_files
from clients.client import LedgerClient, connect
from clients.describe import (
    answer_facts,
    describe_entry,
    entry_line,
    enum_name,
    statement_of,
)
from clients.party_option import add_party_option, party_of
from clients.query_args import RELATIVE_HELP, parse_time
from ledger import investigations, keys, policy, statements
from ledger.clock import now_us, parse_iso, to_iso, to_timestamp, to_us
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.trust import SHA256_HEX

HOUR_US = 3600 * 1_000_000
OUTCOMES = ("confirmed", "not_confirmed", "inconclusive")
PUBLICATION = {
    "sealed-until-finding": pb.PUBLICATION_RULE_SEALED_UNTIL_FINDING,
    "open": pb.PUBLICATION_RULE_OPEN,
}
VISIT_OUTCOMES = {
    "completed": pb.VISIT_OUTCOME_COMPLETED,
    "partial": pb.VISIT_OUTCOME_PARTIAL,
    "access-denied": pb.VISIT_OUTCOME_ACCESS_DENIED,
    "postponed": pb.VISIT_OUTCOME_POSTPONED,
}
ACTIVITIES = {
    "exercise": pb.ACTIVITY_KIND_MILITARY_EXERCISE,
    "engineering-works": pb.ACTIVITY_KIND_ENGINEERING_WORKS,
    "demining": pb.ACTIVITY_KIND_DEMINING,
    "harvest": pb.ACTIVITY_KIND_HARVEST,
    "other": pb.ACTIVITY_KIND_OTHER,
}
ACTIVITY_NAMES = {v: k for k, v in ACTIVITIES.items()}
TIME_PRECISIONS = ("minute", "hour", "day", "week", "month")
LOCATION_PRECISIONS = ("exact", "near", "region")


def _key_id(value: str) -> str:
    """A key id given as hex, or the id of the key in a public or private key file."""
    if SHA256_HEX.match(value) and not Path(value).exists():
        return value
    return dsse.key_id(keys.read_public(Path(value)))


def _point(text: str) -> pb.GeoPoint:
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON in degrees") from None
    return pb.GeoPoint(latitude=lat, longitude=lon)


def _site(text: str) -> pb.InvestigationSite:
    # The name may hold '=' itself: the coordinates follow the last one.
    name, _, where = text.rpartition("=")
    parts = where.split(",")
    try:
        if not name or len(parts) != 3:
            raise ValueError
        center = pb.GeoPoint(latitude=float(parts[0]), longitude=float(parts[1]))
        return pb.InvestigationSite(name=name, center=center, radius_m=float(parts[2]))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=LAT,LON,RADIUS_M (e.g. Berd=40.8811,45.3875,500)"
        ) from None


def _text(value: str | None, language: str) -> tuple[str, str]:
    """A free text and its language tag; no tag without a text."""
    return (value, language) if value else ("", "")


# -- request and terms files -------------------------------------------------------------

# The fields of each file as docs/investigations.md spells them.
REQUEST_FIELDS = (
    "party",
    "incidents",
    "respondents",
    "answer_within_hours",
    "answer_by",
    "scope",
    "language",
)
TERMS_FIELDS = (
    "members",
    "sites",
    "visit_procedure",
    "language",
    "outcomes",
    "publication",
    "supersedes",
)
SITE_FIELDS = ("lat", "lon", "radius_m")


class _Fields:
    """One mapping of a file a person wrote, read field by field: every error names the
    file and the field's path (`terms.yaml: sites[0]: unknown key 'lon_' ...`)."""

    def __init__(self, path: Path, where: str, doc: object, known: tuple[str, ...]) -> None:
        self.path, self.where = path, where
        if not isinstance(doc, dict):
            self.fail(f"a mapping of {', '.join(known)}", where)
        assert isinstance(doc, dict)
        self.doc: dict[Any, Any] = doc
        for key in doc:
            if key not in known:
                raise user_files.UserFileError(
                    f"{self._at(where)}{user_files.unknown_key(key, known)}"
                )

    def _at(self, where: str) -> str:
        return f"{self.path}: {where}: " if where else f"{self.path}: "

    def fail(self, wanted: str, where: str) -> None:
        raise user_files.UserFileError(f"{self._at(where)}must be {wanted}")

    def field(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def text(self, name: str) -> str | None:
        value = self.doc.get(name)
        if value is not None and not isinstance(value, str):
            self.fail("a text", self.field(name))
        return value

    def number(self, name: str) -> float | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail("a number", self.field(name))
        return float(value)

    def index(self, name: str) -> int | None:
        value = self.doc.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail("a log index (a whole number)", self.field(name))
        if value is not None and value < 0:
            self.fail("a log index (0 or more)", self.field(name))
        return value

    def items(self, name: str) -> list[Any] | None:
        """A list; a single value is a list of one."""
        value = self.doc.get(name)
        if value is None:
            return None
        return value if isinstance(value, list) else [value]

    def texts(self, name: str) -> list[str] | None:
        values = self.items(name)
        for i, v in enumerate(values or []):
            if not isinstance(v, str | int) or isinstance(v, bool):
                self.fail("a text", f"{self.field(name)}[{i}]")
        return None if values is None else [str(v) for v in values]

    def indexes(self, name: str) -> list[int] | None:
        values = self.items(name)
        for i, v in enumerate(values or []):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                self.fail("a log index (1 or more)", f"{self.field(name)}[{i}]")
        return values

    def choices(self, name: str, known: Collection[str]) -> list[str] | None:
        """Names from `known`, in any case, with '-' or '_'."""
        values = self.texts(name)
        if values is None:
            return None
        spelt = {k.replace("-", "_"): k for k in known}
        chosen = []
        for i, v in enumerate(values):
            k = spelt.get(v.lower().replace("-", "_"))
            if k is None:
                self.fail("one of " + ", ".join(known), f"{self.field(name)}[{i}]")
            chosen.append(str(k))
        return chosen


def _load_fields(path: Path, known: tuple[str, ...]) -> _Fields:
    if not path.is_file():
        raise user_files.UserFileError(f"{path}: no such file")
    return _Fields(path, "", user_files.load(path), known)


def _sites(f: _Fields) -> list[pb.InvestigationSite] | None:
    """`sites:` as `NAME: {lat, lon, radius_m}`, or as a list of `{name, lat, lon, radius_m}`."""
    value = f.doc.get("sites")
    if value is None:
        return None
    named: list[tuple[str, str, object]]
    if isinstance(value, dict):
        named = [(str(k), f"sites[{str(k)!r}]", v) for k, v in value.items()]
    elif isinstance(value, list):
        named = []
        for i, v in enumerate(value):
            where = f"sites[{i}]"
            site = _Fields(f.path, where, v, ("name", *SITE_FIELDS))
            name = site.text("name")
            if not name:
                site.fail("named (name: ...)", where)
            named.append((str(name), where, {k: x for k, x in v.items() if k != "name"}))
    else:
        f.fail("a mapping of NAME: {lat, lon, radius_m}", "sites")
        return None
    sites = []
    for name, where, v in named:
        site = _Fields(f.path, where, v, SITE_FIELDS)
        lat, lon, radius = site.number("lat"), site.number("lon"), site.number("radius_m")
        for field, value_ in (("lat", lat), ("lon", lon), ("radius_m", radius)):
            if value_ is None:
                site.fail(f"given a {field}", where)
        assert lat is not None and lon is not None and radius is not None
        center = pb.GeoPoint(latitude=lat, longitude=lon)
        sites.append(pb.InvestigationSite(name=name, center=center, radius_m=radius))
    return sites


def _from_file(args: argparse.Namespace, values: dict[str, Any]) -> None:
    """A file's values where the command line gave none: a flag overrides the file."""
    for name, value in values.items():
        if value is not None and getattr(args, name, None) in (None, []):
            setattr(args, name, value)


def _missing(args: argparse.Namespace, needed: dict[str, str], file_field: str) -> None:
    """Refuse (a usage error) when neither a flag nor the file gives a needed value."""
    lacking = [flag for name, flag in needed.items() if getattr(args, name, None) in (None, [])]
    if lacking:
        raise ValueError(
            f"give {', '.join(lacking)}, or write {'them' if len(lacking) > 1 else 'it'} "
            f"in {file_field}"
        )


def _request_file(args: argparse.Namespace) -> None:
    f = _load_fields(args.file, REQUEST_FIELDS)
    answer_by = f.doc.get("answer_by")
    if isinstance(answer_by, datetime):  # YAML reads an unquoted time as a datetime
        answer_by = answer_by.isoformat()
    elif answer_by is not None and not isinstance(answer_by, str):
        f.fail("an ISO 8601 time", "answer_by")
    if answer_by is not None and f.doc.get("answer_within_hours") is not None:
        f.fail("given alone: answer_by or answer_within_hours, not both", "answer_by")
    language = f.text("language")
    _from_file(
        args,
        {
            "party": f.text("party"),
            "incident": f.indexes("incidents"),
            "respondent": f.texts("respondents"),
            "scope": f.text("scope"),
        },
    )
    if args.answer_within is None and args.answer_by is None:
        args.answer_within = f.number("answer_within_hours")
        args.answer_by = answer_by
    if language and args.language is None:
        args.language = language


def _terms_file(args: argparse.Namespace) -> None:
    f = _load_fields(args.file, TERMS_FIELDS)
    publication = f.choices("publication", list(PUBLICATION))
    language = f.text("language")
    _from_file(
        args,
        {
            "member": f.texts("members"),
            "site": _sites(f),
            "procedure": f.text("visit_procedure"),
            "outcome": f.choices("outcomes", OUTCOMES),
            "publication": publication[0] if publication else None,
            "supersedes": f.index("supersedes"),
        },
    )
    if language and args.language is None:
        args.language = language


# -- investigations ----------------------------------------------------------------------


def cmd_request(args: argparse.Namespace) -> int:
    if args.file is not None:
        _request_file(args)
    _missing(
        args,
        {
            "incident": "--incident",
            "respondent": "--respondent",
            "answer_within": "--answer-within (or --answer-by)",
        }
        if args.answer_by is None
        else {"incident": "--incident", "respondent": "--respondent"},
        "a request file (incidents, respondents, answer_within_hours)",
    )
    if args.answer_by:
        answer_by = parse_iso(args.answer_by)
    else:
        answer_by = now_us() + round(args.answer_within * HOUR_US)
    args.party = party_of(args)
    scope, scope_language = _text(args.scope, args.language or "en")
    request = pb.InvestigationRequest(
        created_time=to_timestamp(now_us()),
        party=args.party,
        incident_indexes=args.incident,
        respondents=args.respondent,
        answer_by=to_timestamp(answer_by),
        scope=scope,
        scope_language=scope_language,
    )
    incidents = ", ".join(str(i) for i in args.incident)
    return signing.sign_and_deliver(
        args,
        statements.INVESTIGATION_REQUEST,
        request,
        f"investigation of incidents {incidents} requested by {args.party}, "
        f"answers by {to_iso(answer_by)}",
    )


def cmd_answer(args: argparse.Namespace) -> int:
    args.party = party_of(args)
    response = pb.InvestigationResponse(
        investigation_index=args.index,
        created_time=to_timestamp(now_us()),
        party=args.party,
        decision=args.decision,
        reason=args.reason or "",
    )
    said = "accepts" if args.decision == pb.INVESTIGATION_DECISION_ACCEPT else "declines"
    return signing.sign_and_deliver(
        args,
        statements.INVESTIGATION_RESPONSE,
        response,
        f"{args.party} {said} investigation {args.index}",
    )


def cmd_terms(args: argparse.Namespace) -> int:
    if args.file is not None:
        _terms_file(args)
    _missing(
        args,
        {
            "member": "--member",
            "site": "--site",
            "outcome": "--outcome",
            "publication": "--publication",
        },
        "a terms file (members, sites, outcomes, publication)",
    )
    procedure, procedure_language = _text(args.procedure, args.language or "en")
    terms = pb.InvestigationTerms(
        investigation_index=args.index,
        created_time=to_timestamp(now_us()),
        supersedes_index=args.supersedes or 0,
        member_key_ids=[_key_id(m) for m in args.member],
        sites=args.site,
        visit_procedure=procedure,
        visit_procedure_language=procedure_language,
        outcome_vocabulary=[
            pb.FindingOutcome.Value("FINDING_OUTCOME_" + o.upper()) for o in args.outcome
        ],
        publication_rule=PUBLICATION[args.publication],
    )
    return signing.sign_and_deliver(
        args, statements.INVESTIGATION_TERMS, terms, f"terms of investigation {args.index}"
    )


def cmd_visit(args: argparse.Namespace) -> int:
    args.party = party_of(args)
    notes, notes_language = _text(args.notes, args.language)
    now = now_us()
    visit = pb.VisitRecord(
        investigation_index=args.index,
        created_time=to_timestamp(now),
        party=args.party,
        site=args.site,
        started=to_timestamp(parse_time(args.started, now, "--started")),
        ended=to_timestamp(parse_time(args.ended, now, "--ended")),
        outcome=VISIT_OUTCOMES[args.outcome],
        denied_by=args.denied_by or "",
        members_present=[_key_id(m) for m in args.present or []],
        notes=notes,
        notes_language=notes_language,
        evidence_sha256=args.evidence or [],
    )
    return signing.sign_and_deliver(
        args,
        statements.VISIT,
        visit,
        f"visit to {args.site} ({args.outcome}) in investigation {args.index}",
    )


def _trust_root(client: LedgerClient) -> pb.TrustRoot:
    """Entry 0: the trust root the ledger was founded on (parties, finding policies)."""
    _, root = statement_of(client.entry(0).entry)
    assert isinstance(root, pb.TrustRoot)
    return root


def _request_of(got: api.GetInvestigationResponse, index: int) -> pb.InvestigationRequest:
    for e in got.entries:
        if e.relation == "request":
            _, stmt = statement_of(e.entry)
            if isinstance(stmt, pb.InvestigationRequest):
                return stmt
    raise ValueError(f"entry {index} is not an investigation request")


def cmd_finding(args: argparse.Namespace) -> int:
    with connect(args) as client:
        request = _request_of(client.investigation(args.index), args.index)
        policies = [p.name for p in _trust_root(client).finding_policies]
    if args.policy is None:
        if len(policies) != 1:
            raise ValueError(
                f"give --policy: the trust root names {', '.join(policies) or 'no'} "
                "finding policies"
            )
        args.policy = policies[0]
    args.party = party_of(args)
    incidents = args.incident or list(request.incident_indexes)
    reasoning, reasoning_language = _text(args.reasoning, args.language)
    draft = pb.FindingDraft(
        created_time=to_timestamp(now_us()),
        party=args.party,
        incident_indexes=incidents,
        policy=args.policy,
        outcome=pb.FindingOutcome.Value("FINDING_OUTCOME_" + args.outcome.upper()),
        attribution=args.attribution or "",
        reasoning=reasoning,
        reasoning_language=reasoning_language,
        evidence_sha256=args.evidence or [],
        investigation_index=args.index,
    )
    listed = ", ".join(str(i) for i in incidents)
    return signing.sign_and_deliver(
        args,
        statements.FINDING,
        draft,
        f"finding of investigation {args.index} on incidents {listed}: {args.outcome} "
        f"(policy {args.policy}); attested with `ceasefire attest N --key KEY`",
    )


def cmd_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        got = client.investigation(args.index)
        root = _trust_root(client)
    entries: list[dict[str, Any]] = [
        {"relation": e.relation, **describe_entry(e.entry), **answer_facts(e.relation, e.entry)}
        for e in got.entries
    ]
    ahead = next_steps(args.index, got, root, _key_files(args.keys))
    doc = {
        "investigation": args.index,
        "status": investigations.status_name(got.status),
        "as_of": to_iso(to_us(got.as_of)),
        "answer_by": to_iso(to_us(got.answer_by)),
        "awaiting": list(got.awaiting),
        # Index 0 is the trust root, never terms: the API's 0 means none agreed.
        "terms_index": got.terms_index or None,
        "members": list(got.member_key_ids),
        "entries": entries,
        "next": ahead.as_json(),
    }
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(f"investigation {args.index}: {doc['status']}  (log clock {doc['as_of']})")
    print(f"  answers by {doc['answer_by']}; awaiting {', '.join(doc['awaiting']) or 'nobody'}")
    if doc["terms_index"] is None:
        print("  terms      none agreed")
    else:
        print(f"  terms      entry {doc['terms_index']}; members:")
        for kid in doc["members"]:
            print(f"    {kid}")
    width = max([9, *(len(e.relation) for e in got.entries)])
    for e in got.entries:
        print(entry_line(e.index, e.relation, e.entry, width))
    print()
    ahead.print()
    return 0


# -- what comes next ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing to do: who (a party and role; None for anyone) and the command to run."""

    party: str | None
    role: str | None
    command: str
    note: str = ""
    optional: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "role": self.role,
            "command": self.command,
            "note": self.note or None,
            "optional": self.optional,
        }


@dataclass(frozen=True)
class Ahead:
    """Where an investigation stands and what must happen next, in order."""

    index: int
    status: str
    summary: str
    steps: tuple[Step, ...] = ()

    @property
    def done(self) -> bool:
        return not self.steps

    def as_json(self) -> dict[str, Any]:
        return {
            "investigation": self.index,
            "status": self.status,
            "summary": self.summary,
            "done": self.done,
            "steps": [s.as_json() for s in self.steps],
        }

    def print(self) -> None:
        print(f"next: {self.summary}")
        for s in self.steps:
            who = " ".join(w for w in (s.party, s.role) if w) or "anyone"
            who = "a member" if who == "member" else who
            print(f"  {'(optional) ' if s.optional else ''}{who}:")
            print(f"    {s.command}")
            if s.note:
                print(f"    {s.note}")


def _key_files(directory: Path | None) -> list[keys.KeyInfo]:
    """The private key files in `directory` (what they say, read without a passphrase)."""
    if directory is None:
        return []
    if not directory.is_dir():
        raise ValueError(f"--keys {directory}: not a directory")
    found = []
    for path in sorted(directory.iterdir()):
        try:
            info = keys.read_key_info(path)
        except (keys.KeyFileError, OSError, ValueError):
            continue  # not a key file: certificates, notes, anything else kept there
        if info.private:
            found.append(info)
    return found


def _quote(text: str) -> str:
    return shlex.quote(text) if text and not text.startswith("<") else text


class _Keys:
    """--key arguments for a party's role or for members: the files found in --keys, else
    placeholders such as `<AZE authority key>`."""

    def __init__(self, root: pb.TrustRoot, found: list[keys.KeyInfo]) -> None:
        self.thresholds = {p.code: p.authority_threshold or 1 for p in root.parties}
        self.found = found

    def of(self, party: str, role: str) -> str:
        need = self.thresholds.get(party, 1) if role == "authority" else 1
        files = [k.path for k in self.found if (k.party, k.role) == (party, role)][:need]
        names = [str(f) for f in files]
        for n in range(len(files), need):
            names.append(f"<{party} {role} key{f' {n + 1}' if need > 1 else ''}>")
        return " ".join(f"--key {_quote(n)}" for n in names)

    def member(self, members: Collection[str]) -> tuple[str | None, str]:
        """A member's party (when its key file names it) and --key."""
        for k in self.found:
            if k.key_id in members:
                return k.party, f"--key {_quote(str(k.path))}"
        return None, "--key <member key>"


def _decoded(got: api.GetInvestigationResponse, *relations: str) -> list[tuple[int, str, Any, str]]:
    """(index, relation, statement, the party the log authorized it for) of some relations."""
    out = []
    for e in got.entries:
        if e.relation in relations:
            _, stmt = statement_of(e.entry)
            out.append((e.index, e.relation, stmt, parse_entry(e.entry).validation.party))
    return out


def _policy_roles(root: pb.TrustRoot, name: str) -> dict[str, str]:
    """Party -> the role its attestation is signed with, for a finding policy."""
    for named in root.finding_policies:
        if named.name == name:
            roles: dict[str, list[str]] = {}
            for p in policy.principals(policy.parse(named.expression)):
                roles.setdefault(p.party, []).append(p.role)
            # A party named in several roles: its authority, else the first role by name.
            return {
                party: "authority" if "authority" in rs else sorted(rs)[0]
                for party, rs in sorted(roles.items())
            }
    return {}


def next_steps(
    index: int, got: api.GetInvestigationResponse, root: pb.TrustRoot, found: list[keys.KeyInfo]
) -> Ahead:
    """Where the investigation stands, from GetInvestigation and the trust root, and the
    commands that move it on, with key files from `found` where they fit."""
    status = investigations.status_name(got.status)
    request = _request_of(got, index)
    key = _Keys(root, found)
    i = index
    if got.status == api.INVESTIGATION_STATUS_REQUESTED:
        by = to_iso(to_us(got.answer_by))
        return Ahead(
            i,
            status,
            f"{', '.join(got.awaiting)} to answer by {by} (log's clock)",
            tuple(
                Step(
                    p,
                    "authority",
                    f"ceasefire investigation answer {i} --accept {key.of(p, 'authority')}",
                    "or: --decline --reason TEXT, instead of --accept",
                )
                for p in got.awaiting
            ),
        )
    if got.status == api.INVESTIGATION_STATUS_DECLINED:
        declined = [
            p
            for _, _, s, p in _decoded(got, "response")
            if s.decision == pb.INVESTIGATION_DECISION_DECLINE
        ]
        return Ahead(
            i, status, f"nothing more: declined by {', '.join(declined)}; a new request may follow"
        )
    if got.status == api.INVESTIGATION_STATUS_UNANSWERED:
        return Ahead(i, status, "nothing more: the deadline passed; a new request may follow")
    if got.status == api.INVESTIGATION_STATUS_ACCEPTED:
        first, others = request.party, list(request.respondents)
        steps = [
            Step(
                first,
                "authority",
                f"ceasefire investigation terms {i} terms.yaml "
                f"{key.of(first, 'authority')} --out terms.json",
                "terms.yaml: members, sites, outcomes, publication "
                "(docs/examples/investigation-terms.yaml)",
            ),
            *(
                Step(p, "authority", f"ceasefire cosign terms.json {key.of(p, 'authority')}")
                for p in others
            ),
            Step(None, None, "ceasefire submit terms.json"),
        ]
        parties = " and ".join([first, *others])
        return Ahead(i, status, f"the terms, signed by the authorities of {parties}", tuple(steps))
    if got.status == api.INVESTIGATION_STATUS_CONCLUDED:
        return Ahead(i, status, "nothing more: every incident has a jointly attested finding")
    return _under_way(i, status, got, request, root, key)


def _under_way(
    i: int,
    status: str,
    got: api.GetInvestigationResponse,
    request: pb.InvestigationRequest,
    root: pb.TrustRoot,
    key: _Keys,
) -> Ahead:
    findings = {n: s for n, _, s, _ in _decoded(got, "finding")}
    answers = _decoded(got, "attestation", "joint_finding", "dissent")
    joint = {s.finding_index for _, rel, s, _ in answers if rel == "joint_finding"}
    covered = {n for f in joint if f in findings for n in findings[f].incident_indexes}
    steps: list[Step] = []
    waiting: list[str] = []
    for f, draft in sorted(findings.items()):
        if f in joint:
            continue
        said = {party: (n, rel) for n, rel, s, party in answers if s.finding_index == f}
        for party, role in _policy_roles(root, draft.policy).items():
            if party in said:
                continue
            waiting.append(f"{party} on finding {f}")
            steps.append(
                Step(
                    party,
                    role,
                    f"ceasefire attest {f} {key.of(party, role)}",
                    f"or: ceasefire dissent {f} --reasons TEXT {key.of(party, role)}",
                )
            )
        covered |= set(draft.incident_indexes)
    open_incidents = [n for n in request.incident_indexes if n not in covered]
    if open_incidents:
        terms = next(
            (s for n, _, s, _ in _decoded(got, "terms") if n == got.terms_index),
            pb.InvestigationTerms(),
        )
        vocabulary = [
            enum_name(pb.FindingOutcome, o, "FINDING_OUTCOME_") for o in terms.outcome_vocabulary
        ]
        outcome = vocabulary[0] if len(vocabulary) == 1 else f"<{'|'.join(vocabulary)}>"
        member_party, member_key = key.member(got.member_key_ids)
        which = (
            ""
            if len(open_incidents) == len(request.incident_indexes)
            else "".join(f" --incident {n}" for n in open_incidents)
        )
        sites = [s.name for s in terms.sites]
        site = _quote(sites[0]) if len(sites) == 1 else f"<{'|'.join(sites)}>"
        steps.append(
            Step(
                member_party,
                "member",
                f"ceasefire investigation visit {i} --site {site} --started <TIME> "
                f"--outcome <{'|'.join(VISIT_OUTCOMES)}> {member_key}",
                "a visit, as the terms provide: TIME is ISO 8601 or before now (2h)",
                optional=True,
            )
        )
        steps.append(
            Step(
                member_party,
                "member",
                f"ceasefire investigation finding {i} --outcome {outcome}{which} {member_key}",
                "a member drafts the finding; the parties then attest it",
            )
        )
        listed = ", ".join(str(n) for n in open_incidents)
        waiting.insert(0, f"a finding on incident{'s' if len(open_incidents) > 1 else ''} {listed}")
    if not waiting:
        # Every party the policies name has answered, and some finding still is not joint.
        return Ahead(
            i,
            status,
            "every party its finding policy names has attested or dissented, yet no finding "
            "is jointly attested: see `ceasefire investigation show` (a member may draft "
            "another finding)",
        )
    return Ahead(i, status, "awaiting " + "; ".join(waiting), tuple(steps))


def cmd_next(args: argparse.Namespace) -> int:
    with connect(args) as client:
        got = client.investigation(args.index)
        root = _trust_root(client)
    ahead = next_steps(args.index, got, root, _key_files(args.keys))
    if args.json:
        print(json.dumps(ahead.as_json(), indent=2, ensure_ascii=False))
        return 0
    print(f"investigation {args.index}: {ahead.status}  (log clock {to_iso(to_us(got.as_of))})")
    ahead.print()
    return 0


# -- notices and the hotline -------------------------------------------------------------


def _polygon(path: Path) -> pb.GeoPolygon:
    """Vertices from a file of LAT,LON lines; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    polygon = pb.GeoPolygon()
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            polygon.points.append(_point(line))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    return polygon


def cmd_notice(args: argparse.Namespace) -> int:
    args.party = party_of(args)
    location = pb.Location(
        uncertainty_m=args.radius_m or 0.0,
        precision=pb.LocationPrecision.Value(
            "LOCATION_PRECISION_" + args.location_precision.upper()
        ),
    )
    if args.point is not None:
        if args.radius_m is None:
            raise ValueError("--point needs --radius-m: the area is a circle around it")
        location.point.CopyFrom(args.point)
    else:
        location.polygon.CopyFrom(_polygon(args.polygon))
    description, description_language = _text(args.description, args.language)
    notice = pb.AdvanceNotice(
        created_time=to_timestamp(now_us()),
        party=args.party,
        activity=ACTIVITIES[args.activity],
        window=pb.TimeWindow(
            start=to_timestamp(parse_iso(args.start)),
            end=to_timestamp(parse_iso(args.end)),
            precision=pb.TimePrecision.Value("TIME_PRECISION_" + args.time_precision.upper()),
        ),
        location=location,
        description=description,
        description_language=description_language,
    )
    return signing.sign_and_deliver(
        args, statements.NOTICE, notice, f"{args.activity} notice by {args.party}"
    )


def cmd_send(args: argparse.Namespace) -> int:
    args.party = party_of(args)
    message = pb.HotlineMessage(
        created_time=to_timestamp(now_us()),
        party=args.party,
        to_party=args.to,
        urgency=pb.HOTLINE_URGENCY_URGENT if args.urgent else pb.HOTLINE_URGENCY_ROUTINE,
        text=args.text,
        text_language=args.language,
        in_reply_to=args.reply_to,
    )
    urgent = "urgent " if args.urgent else ""
    return signing.sign_and_deliver(
        args, statements.HOTLINE, message, f"{urgent}message from {args.party} to {args.to}"
    )


def cmd_ack(args: argparse.Namespace) -> int:
    args.party = party_of(args)
    ack = pb.Acknowledgement(
        entry_index=args.index, created_time=to_timestamp(now_us()), party=args.party
    )
    return signing.sign_and_deliver(
        args, statements.ACKNOWLEDGEMENT, ack, f"{args.party} acknowledges entry {args.index}"
    )


def _message_row(m: api.ListMessagesResponse) -> dict[str, Any]:
    integrated, stmt = statement_of(m.entry)
    row: dict[str, Any] = {"index": m.index, "integrated_time": to_iso(integrated)}
    if isinstance(stmt, pb.AdvanceNotice):
        row |= {
            "kind": "notice",
            "party": stmt.party,
            "to_party": None,  # every other party
            "activity": ACTIVITY_NAMES.get(stmt.activity, "other"),
            "start": to_iso(to_us(stmt.window.start)),
            "end": to_iso(to_us(stmt.window.end)),
            "text": stmt.description,
        }
    else:
        assert isinstance(stmt, pb.HotlineMessage)
        row |= {
            "kind": "hotline",
            "party": stmt.party,
            "to_party": stmt.to_party,
            "urgency": enum_name(pb.HotlineUrgency, stmt.urgency, "HOTLINE_URGENCY_"),
            "in_reply_to": stmt.in_reply_to or None,
            "text": stmt.text,
        }
    row["acknowledged_by"] = dict(sorted(m.acknowledged_by.items()))
    row["replies"] = list(m.replies)
    return row


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = [
            _message_row(m)
            for m in client.messages(
                start=args.start,
                to_party=args.to or "",
                unacknowledged_only=args.unacknowledged,
                limit=args.limit,
            )
        ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no notices or messages match")
    for r in rows:
        if r["kind"] == "notice":
            what = f"{r['activity']} {r['start'][:16]} to {r['end'][:16]}"
        else:
            what = r["urgency"] + (f", re #{r['in_reply_to']}" if r["in_reply_to"] else "")
        acks = ", ".join(f"{p} (#{i})" for p, i in r["acknowledged_by"].items())
        print(
            f"#{r['index']:<5} {r['integrated_time'][:16]}  {r['kind']:<7} "
            f"{r['party']} to {r['to_party'] or 'all'}: {what}"
        )
        if r["text"]:
            print(f"       {r['text']}")
        print(f"       acknowledged by {acks or 'nobody yet'}")
        if r["replies"]:
            print(f"       replies {', '.join(f'#{i}' for i in r['replies'])}")
    return 0


# -- parsers -----------------------------------------------------------------------------


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    ip = sub.add_parser(
        "investigation", help="joint investigations: request, answer, terms, visits, status"
    )
    isub = ip.add_subparsers(dest="action", required=True, metavar="ACTION")

    sp = isub.add_parser("request", help="ask other parties to investigate incidents jointly")
    sp.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="the request as YAML (incidents, respondents, answer_within_hours, scope, ...); "
        "flags given override it",
    )
    add_party_option(sp, "the requesting party")
    sp.add_argument("--incident", type=int, action="append", help="report's log index")
    sp.add_argument("--respondent", action="append", help="a party asked to take part")
    deadline = sp.add_mutually_exclusive_group()
    deadline.add_argument(
        "--answer-within",
        type=float,
        metavar="HOURS",
        help="deadline for answers from now: over 1 hour, at most 90 days (log's clock)",
    )
    deadline.add_argument("--answer-by", metavar="ISO", help="deadline for answers, ISO 8601")
    sp.add_argument("--scope", help="what is to be looked into")
    sp.add_argument("--language", help="the scope's BCP 47 tag (default en)")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_request)

    sp = isub.add_parser("answer", help="accept or decline a request, as a respondent")
    sp.add_argument("index", type=int, help="the request's log index")
    add_party_option(sp, "the answering party")
    decision = sp.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--accept",
        dest="decision",
        action="store_const",
        const=pb.INVESTIGATION_DECISION_ACCEPT,
    )
    decision.add_argument(
        "--decline",
        dest="decision",
        action="store_const",
        const=pb.INVESTIGATION_DECISION_DECLINE,
    )
    sp.add_argument("--reason")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_answer)

    sp = isub.add_parser(
        "terms",
        help="draft the terms (members, sites, outcomes); every party's authorities co-sign",
    )
    sp.add_argument("index", type=int, help="the request's log index")
    sp.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="the terms as YAML (members, sites, outcomes, publication, ...); "
        "flags given override it",
    )
    sp.add_argument(
        "--member",
        action="append",
        metavar="KEY",
        help="a member's key id (hex) or key file (repeatable)",
    )
    sp.add_argument(
        "--site",
        type=_site,
        action="append",
        metavar="NAME=LAT,LON,RADIUS_M",
        help="a place the investigation may visit (repeatable)",
    )
    sp.add_argument("--procedure", help="how visits are conducted and recorded")
    sp.add_argument("--language", help="the procedure's BCP 47 tag (default en)")
    sp.add_argument(
        "--outcome",
        action="append",
        choices=OUTCOMES,
        help="an outcome its findings may state (repeatable)",
    )
    sp.add_argument("--publication", choices=list(PUBLICATION))
    sp.add_argument("--supersedes", type=int, help="the log index of the terms these replace")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_terms)

    sp = isub.add_parser("visit", help="log a site visit, signed by member keys")
    sp.add_argument("index", type=int, help="the request's log index")
    add_party_option(sp, "the logging members' party")
    sp.add_argument("--site", required=True, help="a site name from the terms in force")
    sp.add_argument(
        "--started", required=True, metavar="TIME", help=f"ISO 8601, or before now: {RELATIVE_HELP}"
    )
    sp.add_argument("--ended", default="now", metavar="TIME", help="as --started (default now)")
    sp.add_argument("--outcome", required=True, choices=list(VISIT_OUTCOMES))
    sp.add_argument("--denied-by", help="the party that refused access (access-denied, partial)")
    sp.add_argument(
        "--present", action="append", metavar="KEY", help="a member present: key id or key file"
    )
    sp.add_argument("--notes")
    sp.add_argument("--language", default="en", help="the notes' BCP 47 tag")
    sp.add_argument("--evidence", action="append", help="SHA-256 of evidence (repeatable)")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_visit)

    sp = isub.add_parser(
        "finding", help="draft the investigation's finding, as a member; then the parties attest"
    )
    sp.add_argument("index", type=int, help="the request's log index")
    sp.add_argument("--outcome", required=True, choices=OUTCOMES)
    sp.add_argument(
        "--incident",
        type=int,
        action="append",
        help="an incident it is about (repeatable; default: every incident of the request)",
    )
    sp.add_argument("--policy", help="a finding policy of the trust root (default: its only one)")
    add_party_option(sp, "the drafting members' party")
    sp.add_argument("--attribution", help="the party held responsible, if any")
    sp.add_argument("--reasoning")
    sp.add_argument("--language", default="en", help="the reasoning's BCP 47 tag")
    sp.add_argument("--evidence", action="append", help="SHA-256 of evidence considered")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_finding)

    keys_help = (
        "a directory of key files: name the ones that fit in the commands (by the party and "
        "role, or the member key id, each file names), not placeholders"
    )
    for name, fn, help in (
        ("show", cmd_show, "status, deadline, terms, every linked entry, and what comes next"),
        ("next", cmd_next, "where it stands, who must act, and the command to run next"),
    ):
        sp = isub.add_parser(name, help=help, description=help)
        sp.add_argument("index", type=int, help="the request's log index")
        sp.add_argument("--keys", type=Path, metavar="DIR", help=keys_help)
        server_opt(sp)
        json_opt(sp)
        sp.set_defaults(func=fn)


def add_prevention_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    sp = sub.add_parser("notice", help="announce sensitive activity near the border in advance")
    add_party_option(sp, "the notifying party")
    sp.add_argument("--activity", required=True, choices=list(ACTIVITIES))
    sp.add_argument("--start", required=True, metavar="ISO")
    sp.add_argument("--end", required=True, metavar="ISO", help="must not have passed")
    sp.add_argument("--time-precision", choices=TIME_PRECISIONS, default="minute")
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--point", type=_point, metavar="LAT,LON")
    where.add_argument("--polygon", type=Path, metavar="FILE", help="LAT,LON lines")
    sp.add_argument(
        "--radius-m", type=float, help="the area's radius around --point (margin for --polygon)"
    )
    sp.add_argument("--location-precision", choices=LOCATION_PRECISIONS, default="exact")
    sp.add_argument("--description")
    sp.add_argument("--language", default="en", help="the description's BCP 47 tag")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_notice)

    hp = sub.add_parser("hotline", help="messages between the parties, acknowledgements")
    hsub = hp.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = hsub.add_parser("send", help="send a message to another party")
    add_party_option(sp, "the sending party")
    sp.add_argument("--to", required=True, help="the addressed party")
    sp.add_argument("--urgent", action="store_true")
    sp.add_argument("--text", required=True)
    sp.add_argument("--language", default="en", help="the text's BCP 47 tag")
    sp.add_argument(
        "--reply-to", type=int, default=0, help="the message, notice or report it answers"
    )
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_send)

    sp = hsub.add_parser("ack", help="acknowledge receipt of a message or notice")
    sp.add_argument("index", type=int, help="the message's or notice's log index")
    add_party_option(sp, "the acknowledging party")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_ack)

    sp = hsub.add_parser("list", help="notices and messages, with who acknowledged them")
    sp.add_argument("--to", help="only those addressed to this party (notices: by others)")
    sp.add_argument("--unacknowledged", action="store_true", help="only those not acknowledged yet")
    sp.add_argument("--start", type=int, default=0, help="from this log index on")
    sp.add_argument("--limit", type=int, default=0, help="at most this many (cap 1,000)")
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_list)
