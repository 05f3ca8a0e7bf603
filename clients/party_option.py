"""`--party` where the key decides it: a key file carries its party (`ceasefire keygen
--party ARM`), so a signed command need not be told again.

    add_party_option(sp, "the answering party")   # in a parser: --party, not required
    party = party_of(args)                        # in the command

The party is, first to last: --party; the party every --key file names (files naming none,
such as an old key, are left out); CEASEFIRE_PARTY or the profile's `party`
(clients.profiles sets args.profile_party). Keys of different parties with no --party,
or no party anywhere, are a usage error (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from ledger import keys


class PartyError(ValueError):
    """No party given, and the keys do not decide it."""


def add_party_option(sp: argparse.ArgumentParser, help: str = "the party speaking") -> None:
    sp.add_argument(
        "--party",
        metavar="CODE",
        help=f"{help} (default: the party the --key files name, else CEASEFIRE_PARTY or "
        "the profile's party)",
    )


def parties_of(key_files: Iterable[Path]) -> set[str]:
    """The parties the key files name (a file naming none adds nothing), read without the
    passphrase: an encrypted key is opened once, when it signs."""
    found = (keys.read_key_info(path).party for path in key_files)
    return {party for party in found if party}


def party_of(args: argparse.Namespace) -> str:
    """--party if given; else the one party the keys name; else the profile's party."""
    given: str | None = getattr(args, "party", None)
    if given:
        return given
    parties = parties_of(getattr(args, "key", None) or [])
    if len(parties) == 1:
        return parties.pop()
    if len(parties) > 1:
        raise PartyError(f"give --party: the keys are of {' and '.join(sorted(parties))}")
    fallback: str | None = getattr(args, "profile_party", None)
    if fallback:
        return fallback
    raise PartyError("give --party: the keys name no party")
