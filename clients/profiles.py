"""Named profiles: where a command connects and which key it signs with, kept in a file.

`$XDG_CONFIG_HOME/ceasefire/config.toml` (default `~/.config/ceasefire/config.toml`):

    default_profile = "arm-field"

    [profiles.arm-field]
    server = "ledger.example.org:443"
    tls_ca = "ca.pem"                 # relative to this file's folder; ~ is expanded
    key = ["~/keys/arm-monitor.key"]  # a file, or a list of files
    party = "ARM"
    outbox = "~/field/outbox.db"

A setting comes from, first to last: the command's flag, its environment variable
(CEASEFIRE_SERVER, CEASEFIRE_TLS_CA, ...; see ENVIRONMENT), the profile (`--profile NAME`,
else CEASEFIRE_PROFILE, else `default_profile`), the built-in default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A profile's settings, and the environment variable that overrides each.
ENVIRONMENT = {
    "server": "CEASEFIRE_SERVER",
    "tls_ca": "CEASEFIRE_TLS_CA",
    "tls_cert": "CEASEFIRE_TLS_CERT",
    "tls_key": "CEASEFIRE_TLS_KEY",
    "key": "CEASEFIRE_KEY",  # several files: separated by os.pathsep (':')
    "party": "CEASEFIRE_PARTY",
    "outbox": "CEASEFIRE_OUTBOX",
}
PATH_SETTINGS = frozenset({"tls_ca", "tls_cert", "tls_key", "key", "outbox"})
PROFILE_ENV = "CEASEFIRE_PROFILE"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# The settings that fill a client command's options (those with --server); `party` is only
# a fallback for clients.party_option, after the keys' own party.
CLIENT_SETTINGS = ("server", "tls_ca", "tls_cert", "tls_key", "key", "outbox")


class ProfileError(ValueError):
    """The configuration file or the profile asked for is not usable."""


@dataclass(frozen=True)
class Profile:
    name: str
    source: Path  # the config file it is read from
    server: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    key: tuple[Path, ...] = ()
    party: str | None = None
    outbox: Path | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "file": str(self.source)}
        for name in ENVIRONMENT:
            value = getattr(self, name)
            if name == "key":
                doc[name] = [str(p) for p in value]
            else:
                doc[name] = str(value) if isinstance(value, Path) else value
        return doc


@dataclass(frozen=True)
class Config:
    path: Path
    default_profile: str | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict)


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/ceasefire/config.toml`, else `~/.config/ceasefire/config.toml`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ceasefire" / "config.toml"


def load(path: Path | None = None) -> Config:
    """The configuration file, checked; an empty one when it does not exist."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: cannot read it ({e})") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML ({e})") from e
    unknown = sorted(set(doc) - {"default_profile", "profiles"})
    if unknown:
        raise ProfileError(
            f"{path}: unknown key {unknown[0]!r} (known: default_profile, [profiles.NAME])"
        )
    default = doc.get("default_profile")
    if default is not None and not isinstance(default, str):
        raise ProfileError(f"{path}: default_profile must be a profile's name (a string)")
    tables = doc.get("profiles", {})
    if not isinstance(tables, dict):
        raise ProfileError(f"{path}: profiles must be tables: [profiles.NAME]")
    profiles = {name: _profile(path, name, table) for name, table in tables.items()}
    return Config(path, default, profiles)


def _profile(path: Path, name: str, table: Any) -> Profile:
    where = f"{path}: profiles.{name}"
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: must be a table ([profiles.{name}])")
    unknown = sorted(set(table) - set(ENVIRONMENT))
    if unknown:
        raise ProfileError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ENVIRONMENT)})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "key":
            files = [value] if isinstance(value, str) else value
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise ProfileError(f"{where}.key: a key file, or a list of key files")
            values[key] = tuple(_path(path, f) for f in files)
        elif not isinstance(value, str):
            raise ProfileError(f"{where}.{key}: must be a string")
        else:
            values[key] = _path(path, value) if key in PATH_SETTINGS else value
    return Profile(name=name, source=path, **values)


def _path(config: Path, value: str) -> Path:
    """`~` expanded; a relative path is relative to the configuration file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else config.parent / p


def select(name: str | None, config: Config | None = None) -> Profile | None:
    """The profile `name` (from --profile), else CEASEFIRE_PROFILE's, else the file's
    default_profile; None when none is named. A name the file lacks is an error."""
    config = config or load()
    chosen = name or os.environ.get(PROFILE_ENV) or config.default_profile
    if not chosen:
        return None
    try:
        return config.profiles[chosen]
    except KeyError:
        known = ", ".join(config.profiles) or "none"
        if name:
            how = "--profile"
        elif os.environ.get(PROFILE_ENV):
            how = PROFILE_ENV
        else:
            how = "default_profile"
        raise ProfileError(
            f"{config.path}: no profile {chosen!r} ({how}); profiles there: {known}"
        ) from None


def from_environment(setting: str) -> Any:
    """The setting's environment variable, as the option's type; None when not set."""
    value = os.environ.get(ENVIRONMENT[setting])
    if not value:
        return None
    if setting == "key":
        return [Path(p) for p in value.split(os.pathsep) if p]
    return Path(value) if setting in PATH_SETTINGS else value


def setting(profile: Profile | None, name: str) -> Any:
    """The environment variable's value, else the profile's; None when neither has one."""
    value = from_environment(name)
    if value is not None:
        return value
    if profile is None:
        return None
    got = getattr(profile, name)
    if name == "key":
        return list(got) or None
    return got


def apply(args: argparse.Namespace, profile: Profile | None) -> None:
    """Fill a client command's options the command line left unset (None): from the
    environment, else the profile. `args.profile_party` is the party fallback."""
    args.profile_party = setting(profile, "party")
    client = getattr(args, "client_options", False)
    # serve, init, witness ...: their --tls-cert, --key are of another kind; an outbox is one.
    for name in CLIENT_SETTINGS if client else ("outbox",):
        if hasattr(args, name) and getattr(args, name) is None:
            value = setting(profile, name)
            if name == "key" and value and getattr(args, "key_single", False):
                value = value[0]  # a command taking one key file: the first
            setattr(args, name, value)


# -- writing (ceasefire profile add) -----------------------------------------------------


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, given no escaped astral characters.
    return json.dumps(value, ensure_ascii=False)


def table_text(name: str, values: Mapping[str, Any]) -> str:
    """`[profiles.NAME]` and its settings as TOML."""
    lines = [f"[profiles.{name}]"]
    for key in ENVIRONMENT:
        value = values.get(key)
        if value is None or value == []:
            continue
        if isinstance(value, list):
            lines.append(f"{key} = [{', '.join(_toml_string(str(v)) for v in value)}]")
        else:
            lines.append(f"{key} = {_toml_string(str(value))}")
    return "\n".join(lines) + "\n"


def add_profile(
    name: str, values: Mapping[str, Any], *, make_default: bool, path: Path | None = None
) -> Profile:
    """Append `[profiles.NAME]` to the configuration file (created 0600 in a 0700 folder),
    keeping what is there; with make_default, it becomes default_profile."""
    if not PROFILE_NAME.match(name):
        raise ProfileError(f"profile name {name!r}: 1-64 letters, digits, '_' or '-'")
    path = path or config_path()
    config = load(path)
    if name in config.profiles:
        raise ProfileError(f"{path}: profile {name!r} exists; edit it there")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if make_default or (config.default_profile is None and not config.profiles):
        line = f"default_profile = {_toml_string(name)}"
        pattern = re.compile(r"^default_profile\s*=.*$", re.MULTILINE)
        # A top-level key must come before the first table.
        text = pattern.sub(line, text) if pattern.search(text) else f"{line}\n\n{text}"
    if text and not text.endswith("\n"):
        text += "\n"
    text += ("\n" if text.strip() else "") + table_text(name, values)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    load(tmp)  # what is written reads back, before it replaces the file
    os.replace(tmp, path)
    return load(path).profiles[name]


# -- ceasefire profile list | show | add -------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    config = load()
    if args.json:
        doc = {
            "file": str(config.path),
            "default_profile": config.default_profile,
            "profiles": [p.as_json() for p in config.profiles.values()],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if not config.profiles:
        print(f"no profiles in {config.path} (add one: ceasefire profile add NAME --server ...)")
    for name, p in config.profiles.items():
        mark = "*" if name == config.default_profile else " "
        print(f"{mark} {name:<16} {p.server or '-':<28} {p.party or '-':<5} {len(p.key)} key(s)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = load()
    profile = select(args.name or getattr(args, "profile", None), config)
    if profile is None:
        raise ProfileError(f"{config.path}: no profile named, and no default_profile")
    # What the environment changes of it, for the commands run from this shell.
    overridden = {name: os.environ[env] for name, env in ENVIRONMENT.items() if os.environ.get(env)}
    if args.json:
        doc = {**profile.as_json(), "overridden_by_environment": overridden}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(f"profile {profile.name} ({profile.source})")
    for name, value in profile.as_json().items():
        if name in ("name", "file"):
            continue
        shown = ", ".join(value) if isinstance(value, list) else value
        env = ""
        if name in overridden:
            env = f"   (overridden: {ENVIRONMENT[name]}={overridden[name]})"
        print(f"  {name:<9} {shown if shown else '-'}{env}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    def absolute(p: Path | None) -> str | None:
        return str(p.expanduser().absolute()) if p is not None else None

    values: dict[str, Any] = {
        "server": args.server,
        "tls_ca": absolute(args.tls_ca),
        "tls_cert": absolute(args.tls_cert),
        "tls_key": absolute(args.tls_key),
        "key": [absolute(k) for k in args.key or []],
        "party": args.party.upper() if args.party else None,
        "outbox": absolute(args.outbox),
    }
    profile = add_profile(args.name, values, make_default=args.default)
    if args.json:
        print(json.dumps(profile.as_json(), indent=2, ensure_ascii=False))
    else:
        print(f"added profile {profile.name} to {profile.source}")
    return 0


def add_parsers(sub: Any, json_opt: Any) -> None:
    pp = sub.add_parser(
        "profile",
        help="named settings (server, TLS files, key, party, outbox) in config.toml",
        description=f"Profiles in {config_path()} (see docs/cli.md): "
        "ceasefire --profile NAME COMMAND, or CEASEFIRE_PROFILE=NAME.",
    )
    ps = pp.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = ps.add_parser("list", help="the profiles, the default marked *")
    json_opt(sp)
    sp.set_defaults(func=cmd_list)
    sp = ps.add_parser("show", help="one profile (default: the one in use)")
    sp.add_argument("name", nargs="?")
    json_opt(sp)
    sp.set_defaults(func=cmd_show)
    sp = ps.add_parser("add", help="add a profile (paths are kept absolute)")
    sp.add_argument("name")
    sp.add_argument("--server", metavar="HOST:PORT")
    sp.add_argument("--tls-ca", type=Path, metavar="FILE")
    sp.add_argument("--tls-cert", type=Path, metavar="FILE")
    sp.add_argument("--tls-key", type=Path, metavar="FILE")
    sp.add_argument("--key", type=Path, action="append", help="a key file (repeatable)")
    sp.add_argument("--party", metavar="CODE")
    sp.add_argument("--outbox", type=Path, metavar="FILE")
    sp.add_argument("--default", action="store_true", help="make it the default_profile")
    json_opt(sp)
    sp.set_defaults(func=cmd_add)
