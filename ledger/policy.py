"""Signature policies over 'PARTY.role' principals, in the style of Hyperledger Fabric:

    AND(ARM.authority, AZE.authority)
    OR(ARM.authority, OBS.observer)
    OutOf(2, ARM.authority, AZE.authority, OBS.observer)

A principal `P.authority` is met when party P's authority threshold of its authority keys
has signed; any other `P.role` is met by one signing key of that role of party P. Signers are
counted once each (by key id). Pure and deterministic: the server and the offline verifier
evaluate the same text to the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_POLICY_CHARS = 1000
MAX_DEPTH = 8
ROLES = ("monitor", "authority", "observer", "investigator", "witness", "operator")
_TOKEN = re.compile(r"\s*(?:(AND|OR|OutOf)\s*\(|([A-Z][A-Z0-9_]{1,15})\.([a-z]+)|(\d+)|(,)|(\)))")


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    party: str
    role: str

    def __str__(self) -> str:
        return f"{self.party}.{self.role}"


@dataclass(frozen=True)
class Gate:
    """Met when at least `need` of `terms` are met (AND: all, OR: one)."""

    need: int
    terms: tuple[Policy, ...]


Policy = Principal | Gate


def parse(text: str) -> Policy:
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError(f"a policy is at most {MAX_POLICY_CHARS} characters")
    tokens = _tokenize(text)
    policy, rest = _parse(tokens, 0)
    if rest != len(tokens):
        raise PolicyError(f"unexpected {tokens[rest][1]!r} after the policy")
    return policy


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PolicyError(f"cannot read the policy at {text[pos : pos + 20]!r}")
        gate, party, role, number, comma, close = m.groups()
        if gate:
            tokens.append(("gate", gate))
        elif party:
            if role not in ROLES:
                raise PolicyError(f"{party}.{role}: the role must be one of {', '.join(ROLES)}")
            tokens.append(("principal", f"{party}.{role}"))
        elif number:
            tokens.append(("number", number))
        elif comma:
            tokens.append((",", ","))
        elif close:
            tokens.append((")", ")"))
        pos = m.end()
    return tokens


def _parse(tokens: list[tuple[str, str]], i: int, depth: int = 0) -> tuple[Policy, int]:
    if depth > MAX_DEPTH:
        raise PolicyError(f"a policy nests at most {MAX_DEPTH} deep")
    if i >= len(tokens):
        raise PolicyError("the policy ends too early")
    kind, value = tokens[i]
    if kind == "principal":
        party, role = value.split(".")
        return Principal(party, role), i + 1
    if kind != "gate":
        raise PolicyError(f"expected AND(, OR(, OutOf( or PARTY.role, got {value!r}")
    i += 1
    need = 0
    if value == "OutOf":
        if i >= len(tokens) or tokens[i][0] != "number":
            raise PolicyError("OutOf( starts with how many are needed")
        need = int(tokens[i][1])
        i += 1
        if i >= len(tokens) or tokens[i][0] != ",":
            raise PolicyError("OutOf(k needs a comma after k")
        i += 1
    terms: list[Policy] = []
    while True:
        term, i = _parse(tokens, i, depth + 1)
        terms.append(term)
        if i < len(tokens) and tokens[i][0] == ",":
            i += 1
            continue
        if i < len(tokens) and tokens[i][0] == ")":
            i += 1
            break
        raise PolicyError(f"{value}( is not closed")
    if value == "AND":
        need = len(terms)
    elif value == "OR":
        need = 1
    if not 1 <= need <= len(terms):
        raise PolicyError(f"OutOf({need}, ...) needs 1 to {len(terms)}")
    return Gate(need, tuple(terms)), i


def evaluate(policy: Policy, met: Callable[[Principal], bool]) -> bool:
    if isinstance(policy, Principal):
        return met(policy)
    return sum(evaluate(t, met) for t in policy.terms) >= policy.need


def principals(policy: Policy) -> set[Principal]:
    if isinstance(policy, Principal):
        return {policy}
    return set().union(*(principals(t) for t in policy.terms))
