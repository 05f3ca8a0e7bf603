"""`ceasefire export-incidents`, `ceasefire map` and `ceasefire chart`: a query's incidents
as GeoJSON, CSV or GeoPackage, as a map (PNG or an offline HTML page) and as a chart of
incidents per week (PNG). Each reads the signed checkpoint first, then the timeline as the
log stood at that checkpoint, so every row is covered by the checkpoint it is exported
with. The formats and pictures themselves are clients/exports.py and clients/pictures.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ceasefire.v1 import ledger_service_pb2 as api

from clients import exit_codes, query_args
from clients.client import LedgerClient, connect
from clients.progress import Progress
from clients.progress import add_option as add_progress_option
from clients.progress import wanted as progress_wanted
from geo.defaults import DEFAULT_DATASET_DIR

if TYPE_CHECKING:
    from clients import exports
    from geo.borders import BorderDataset

FORMATS = {".geojson": "geojson", ".json": "geojson", ".csv": "csv", ".gpkg": "gpkg"}
MAP_FORMATS = {".png": "png", ".html": "html", ".htm": "html"}
STDOUT = Path("-")
LONG_READ = 1000  # rows: a read this long ends with a line on stderr (count, time, rate)


class ExportError(Exception):
    """A user error: one line, exit code USAGE."""


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    sp = sub.add_parser(
        "export-incidents",
        help="incidents of a query as GeoJSON, CSV or GeoPackage, each row verifiable",
        description="Incidents of a query as GeoJSON (RFC 7946), CSV or GeoPackage, with "
        "ACLED and UCDP GED columns; each row carries its log index, leaf hash and the "
        "checkpoint it was read under (see docs/investigators.md).",
    )
    sp.add_argument("--out", type=Path, required=True, help="the file to write; - for stdout")
    sp.add_argument(
        "--format",
        choices=["geojson", "csv", "gpkg"],
        help="default: from the file's suffix (.geojson .json .csv .gpkg)",
    )
    sp.add_argument(
        "--as-logged",
        action="store_true",
        help="each report as first logged (what its leaf holds) instead of as last amended",
    )
    sp.add_argument(
        "--no-comment", action="store_true", help="CSV: no '# disclaimer' line before the header"
    )
    _common(sp, server_opt, json_opt)
    sp.set_defaults(func=cmd_export_incidents)

    sp = sub.add_parser(
        "map",
        help="a map of a query's incidents over the border data: PNG or offline HTML",
        description="A map of a query's incidents over the border data: colour by reporting "
        "party, shape by category, hollow when disputed, crossed when retracted.",
    )
    sp.add_argument("--out", type=Path, required=True, help="FILE.png or FILE.html; - for stdout")
    sp.add_argument("--format", choices=["png", "html"], help="default: from the file's suffix")
    sp.add_argument("--title", default="Incidents")
    _common(sp, server_opt, json_opt)
    sp.set_defaults(func=cmd_map)

    sp = sub.add_parser(
        "chart",
        help="a chart of a query's incidents per week by party and category (PNG)",
        description="Incidents per week (of their start, UTC) by reporting party and "
        "category, as stacked bars (PNG).",
    )
    sp.add_argument("--out", type=Path, required=True, help="FILE.png; - for stdout")
    sp.add_argument("--title", default="Incidents per week")
    _common(sp, server_opt, json_opt)
    sp.set_defaults(func=cmd_chart)


def _common(sp: argparse.ArgumentParser, server_opt: Any, json_opt: Any) -> None:
    server_opt(sp)
    # The filters of `ceasefire timeline`; every match is read, page after page.
    query_args.add_query_options(sp, paging=False)
    sp.add_argument(
        "--border-data",
        type=Path,
        default=DEFAULT_DATASET_DIR,
        metavar="DIR",
        help="the border data set to draw and cite (default: the bundled one)",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_progress_option(sp)
    json_opt(sp)


def _request(args: argparse.Namespace) -> api.TimelineRequest:
    return query_args.query_from_args(args)


def read_query(
    client: LedgerClient, request: api.TimelineRequest, progress: Progress
) -> tuple[list[api.TimelineResponse], exports.Checkpoint]:
    """The checkpoint, then the timeline as the log stood at it (or before, if the request
    asks for an earlier index): every row is covered by the checkpoint."""
    from clients import exports

    checkpoint = exports.Checkpoint.of(client.checkpoint())
    wanted = request.as_of_index
    if wanted > checkpoint.size:
        raise ExportError(
            f"--as-of-index {wanted} is past the latest checkpoint (size {checkpoint.size})"
        )
    query = api.TimelineRequest()
    query.CopyFrom(request)
    query.as_of_index = wanted or checkpoint.size
    rows: list[api.TimelineResponse] = []
    progress.start(0, "read")
    for t in client.timeline_all(query):
        rows.append(t)
        progress(len(rows))
    if len(rows) >= LONG_READ:
        progress.finish()
    return rows, checkpoint


def _read(args: argparse.Namespace) -> tuple[list[api.TimelineResponse], exports.Checkpoint]:
    request = _request(args)
    progress = Progress(quiet=args.quiet or not progress_wanted(args))
    with connect(args) as client:
        return read_query(client, request, progress)


def _borders(args: argparse.Namespace) -> BorderDataset:
    from geo.borders import BorderDataset

    if not args.border_data.is_dir():
        raise ExportError(f"--border-data {args.border_data}: no such folder")
    return BorderDataset.load(args.border_data)


def _format(args: argparse.Namespace, known: dict[str, str], default: str | None) -> str:
    if args.format:
        return str(args.format)
    fmt = known.get(args.out.suffix.lower(), default)
    if fmt is None:
        raise ExportError(
            f"--out {args.out}: cannot tell the format from its suffix; give --format"
        )
    return fmt


def _check_out(args: argparse.Namespace) -> None:
    if args.out == STDOUT:
        if args.json:
            raise ExportError("--json needs --out FILE (stdout carries the export)")
        return
    folder = args.out.parent
    if not folder.is_dir():
        raise ExportError(f"--out {args.out}: no such folder {folder}")
    if args.out.is_dir():
        raise ExportError(f"--out {args.out} is a folder")
    if not os.access(folder, os.W_OK) or (args.out.exists() and not os.access(args.out, os.W_OK)):
        raise ExportError(f"--out {args.out}: not writable")


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, moved onto it only when written whole."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(out: Path, write: Callable[[TextIO], None]) -> int:
    if out == STDOUT:
        buf = io.StringIO()
        write(buf)
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return len(buf.getvalue().encode())
    with _replacing(out) as tmp:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            write(f)
        size = tmp.stat().st_size
    return size


def _put(out: TextIO, text: str) -> None:
    out.write(text)


def _write_binary(out: Path, draw: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    if out == STDOUT:
        buf = io.BytesIO()
        drawn = draw(buf)
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return {**drawn, "bytes": len(buf.getvalue())}
    with _replacing(out) as tmp:
        drawn = draw(tmp)
        size = tmp.stat().st_size
    return {**drawn, "bytes": size}


def _run(args: argparse.Namespace, body: Callable[[], dict[str, Any]]) -> int:
    """User errors as one line; a closed stdout (`| head`) ends quietly in clients.cli.main
    (exit 141, as for every command)."""
    try:
        summary = body()
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_codes.USAGE
    except BrokenPipeError:
        raise
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return exit_codes.FAILED
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.out != STDOUT:
        print(f"wrote {args.out}: {summary['incidents']} incidents", file=sys.stderr)
    return exit_codes.OK


def _summary(
    args: argparse.Namespace, fmt: str, checkpoint: exports.Checkpoint, **more: Any
) -> dict[str, Any]:
    return {
        "out": str(args.out),
        "format": fmt,
        "checkpoint": {
            "origin": checkpoint.origin,
            "tree_size": checkpoint.size,
            "root_hash_hex": checkpoint.root_hex,
        },
        **more,
    }


def cmd_export_incidents(args: argparse.Namespace) -> int:
    from clients import exports

    def body() -> dict[str, Any]:
        fmt = _format(args, FORMATS, "geojson" if args.out == STDOUT else None)
        if fmt == "gpkg" and args.out == STDOUT:
            raise ExportError("a GeoPackage cannot go to stdout; give --out FILE.gpkg")
        _check_out(args)
        borders = _borders(args)
        rows, checkpoint = _read(args)
        logged = args.as_logged
        sidecar = None
        if fmt == "geojson":
            size = _write_text(
                args.out,
                lambda f: exports.write_geojson(
                    f, rows, checkpoint, borders, as_first_logged=logged
                ),
            )
        elif fmt == "csv":
            size = _write_text(
                args.out,
                lambda f: exports.write_csv(
                    f, rows, checkpoint, borders, comment=not args.no_comment,
                    as_first_logged=logged,
                ),
            )  # fmt: skip
        else:
            with _replacing(args.out) as tmp:
                tmp.unlink()
                exports.write_gpkg(tmp, rows, checkpoint, borders, as_first_logged=logged)
                size = tmp.stat().st_size
        if fmt != "geojson" and args.out != STDOUT:
            sidecar = args.out.with_name(args.out.name + ".checkpoint")
            exports.write_note(sidecar, checkpoint)
        return _summary(
            args, fmt, checkpoint, incidents=len(rows), bytes=size,
            checkpoint_note=str(sidecar) if sidecar else None,
        )  # fmt: skip

    return _run(args, body)


def cmd_map(args: argparse.Namespace) -> int:
    from clients import pictures

    def body() -> dict[str, Any]:
        fmt = _format(args, MAP_FORMATS, "html" if args.out == STDOUT else None)
        _check_out(args)
        borders = _borders(args)
        rows, checkpoint = _read(args)
        if fmt == "html":
            page = pictures.map_html(rows, checkpoint, borders, title=args.title)
            size = _write_text(args.out, lambda f: _put(f, page))
            drawn: dict[str, Any] = {"incidents": len(pictures.incidents_of(rows)), "bytes": size}
        else:
            drawn = _write_binary(
                args.out, lambda f: pictures.map_png(f, rows, checkpoint, borders, title=args.title)
            )
        return _summary(args, fmt, checkpoint, **drawn)

    return _run(args, body)


def cmd_chart(args: argparse.Namespace) -> int:
    from clients import pictures

    def body() -> dict[str, Any]:
        _check_out(args)
        borders = _borders(args)
        rows, checkpoint = _read(args)
        drawn = _write_binary(
            args.out,
            lambda f: pictures.chart_png(f, rows, checkpoint, borders, title=args.title),
        )
        return _summary(args, "png", checkpoint, **drawn)

    return _run(args, body)
