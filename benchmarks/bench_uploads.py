"""Uploads and held streams against a real `ceasefire serve` in another process: what they
cost the server in memory, and whether health checks still answer.

    python benchmarks/bench_uploads.py [--uploads 16] [--mib 16] [--held 64]

Measured in one run, against the idle server as the baseline:
- the server's peak RSS growth (VmHWM, reset before each phase through /proc/PID/clear_refs,
  minus the idle VmRSS) while `--uploads` clients in parallel each send `--mib` MiB after
  an envelope that is not even JSON (refused on the first message), then while as many
  send a valid sealed evidence record with its `--mib` MiB blob (spooled to disk, at most
  64 MiB of uploads in flight; a client told UNAVAILABLE retries after the hint);
- Health/Check and GetCheckpoint latency, idle and with `--held` idle uploads (envelope
  sent, then nothing) and `--held` unread GetBlob streams open.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from clients.client import LedgerClient
from geo.borders import load_default
from ledger import keys, sealing, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import initialize
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed

MiB = 1024 * 1024
CHUNK = 60_000
ROOT = Path(__file__).resolve().parent.parent


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def start_server(home: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "clients.cli", "serve", "--db", str(home / "ledger.db"),
            "--log-key", str(home / "log.key"), "--listen", "127.0.0.1:0",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r" on (\S+):(\d+);", line)
        if found:
            return proc, f"127.0.0.1:{found.group(2)}"
    raise RuntimeError("the server did not start")


def parts(envelope: bytes, data: bytes) -> Iterator[api.SubmitWithBlobsRequest]:
    yield api.SubmitWithBlobsRequest(envelope=envelope)
    for start in range(0, len(data), CHUNK):
        chunk = api.BlobChunk(name="blob", data=data[start : start + CHUNK])
        yield api.SubmitWithBlobsRequest(chunk=chunk)


def retry_delay(error: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    detail: any_pb2.Any
    for detail in status.details if status is not None else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


class Peak:
    """Samples a process's RSS while a phase runs (VmHWM is the kernel's own peak)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def run(self, phase: Callable[[], object]) -> tuple[int, float]:
        reset_peak(self.pid)
        start = time.perf_counter()
        phase()
        took = time.perf_counter() - start
        return memory(self.pid)["VmHWM"], took


def latency(call: Callable[[], object], n: int = 20) -> tuple[float, float]:
    """Median and worst of `n` calls, in milliseconds."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--held", type=int, default=64)
    args = ap.parse_args()
    parties = Parties()
    borders = load_default()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = LedgerStore.open(f"sqlite:///{home / 'ledger.db'}")
        initialize(store, parties.founding_envelope(borders), LogKey(ORIGIN, parties.log), borders)
        store.close()
        keys.write_private(home / "log.key", parties.log)
        proc, address = start_server(home)
        client = LedgerClient(address, timeout_s=120)
        try:
            client.wait_ready()
            run(proc.pid, address, client, parties, args)
        finally:
            client.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def run(pid: int, address: str, client: LedgerClient, parties: Parties, args: Any) -> None:
    incident = client.submit(signed(report("ARM"), parties.arm_monitor)).receipt.index
    members = {
        dsse.key_id(bytes(k.verify_key)): bytes(k.verify_key)
        for k in (parties.arm_authority, parties.aze_authority)
    }

    def sealed(i: int) -> tuple[bytes, bytes]:
        """A signed evidence record and its sealed blob of just under --mib MiB."""
        content = os.urandom(args.mib * MiB - 4096)
        blob = sealing.seal(content, members)
        record = pb.EvidenceRecord(
            created_time=to_timestamp(now_us()), party="ARM", incident_index=incident,
            sha256=hashlib.sha256(content).hexdigest(), media_type="image/jpeg",
            size=len(content), description=f"photo {i}", blob=pb.BLOB_KIND_SEALED,
            blob_sha256=hashlib.sha256(blob).hexdigest(), blob_size=len(blob),
            sealed_to_key_ids=sorted(members),
        )  # fmt: skip
        envelope = dsse.sign(statements.EVIDENCE, record.SerializeToString(), [parties.arm_monitor])
        return envelope.to_json(), blob

    # Warm: one small upload through every code path, then the idle baseline.
    warm_envelope, warm_blob = sealed(-1)
    client.submit_with_blobs(warm_envelope, {"blob": warm_blob})
    time.sleep(1)
    idle = memory(pid)["VmRSS"]
    print(f"server pid {pid}: idle RSS {idle / MiB:.1f} MiB (the baseline)")
    peak = Peak(pid)
    sent = args.uploads * args.mib * MiB
    junk = os.urandom(args.mib * MiB)

    def bad() -> grpc.StatusCode:
        with grpc.insecure_channel(address) as ch:
            stub = api_grpc.LedgerServiceStub(ch)
            try:
                stub.SubmitWithBlobs(parts(b"not even JSON", junk), timeout=120)
            except grpc.RpcError as e:
                assert isinstance(e, grpc.Call)
                return e.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(args.uploads) as pool:
        codes: list[grpc.StatusCode] = []
        top, took = peak.run(lambda: codes.extend(pool.map(lambda _: bad(), range(args.uploads))))
    print(
        f"{args.uploads} parallel {args.mib} MiB uploads, envelope not JSON: peak RSS "
        f"{(top - idle) / MiB:+.1f} MiB over idle ({(top - idle) / sent:.2%} of the "
        f"{sent / MiB:.0f} MiB offered); {codes.count(grpc.StatusCode.INVALID_ARGUMENT)} "
        f"refused INVALID_ARGUMENT in {took:.2f} s"
    )

    uploads = [sealed(i) for i in range(args.uploads)]
    retries = 0
    lock = threading.Lock()

    def good(item: tuple[bytes, bytes]) -> int:
        nonlocal retries
        with grpc.insecure_channel(address) as ch:
            stub = api_grpc.LedgerServiceStub(ch)
            while True:
                try:
                    return stub.SubmitWithBlobs(parts(*item), timeout=300).receipt.index
                except grpc.RpcError as e:
                    delay = retry_delay(e)
                    if delay is None:
                        raise
                    with lock:
                        retries += 1
                    time.sleep(delay)

    with ThreadPoolExecutor(args.uploads) as pool:
        indexes: list[int] = []
        top, took = peak.run(lambda: indexes.extend(pool.map(good, uploads)))
    assert len(set(indexes)) == args.uploads
    print(
        f"{args.uploads} parallel {args.mib} MiB sealed evidence uploads: peak RSS "
        f"{(top - idle) / MiB:+.1f} MiB over idle ({(top - idle) / sent:.2%} of the "
        f"{sent / MiB:.0f} MiB sent); all {len(indexes)} logged in {took:.1f} s "
        f"({sent / MiB / took:.0f} MiB/s), {retries} retries after UNAVAILABLE"
    )
    uploads.clear()  # the clients' copies

    health = health_pb2_grpc.HealthStub(client.channel)

    def check() -> object:
        return health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    def checkpoint() -> object:
        return client.checkpoint()

    idle_health, idle_cp = latency(check), latency(checkpoint)
    before = memory(pid)["VmRSS"]
    release = threading.Event()

    def held(envelope: bytes) -> Iterator[api.SubmitWithBlobsRequest]:
        yield api.SubmitWithBlobsRequest(envelope=envelope)
        release.wait()

    small = dsse.sign(
        statements.EVIDENCE,
        pb.EvidenceRecord(
            created_time=to_timestamp(now_us()), party="ARM", incident_index=incident,
            sha256="ab" * 32, media_type="text/plain", size=1000, blob=pb.BLOB_KIND_PLAIN,
            blob_sha256="ab" * 32, blob_size=1000,
        ).SerializeToString(),
        [parties.arm_monitor],
    ).to_json()  # fmt: skip
    per = 16
    channels = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((args.held + per - 1) // per)
    ]
    calls: list[grpc.Future[api.SubmitWithBlobsResponse]] = []
    readers: list[Any] = []  # grpc.CallIterator, whose cancel() the stubs leave untyped
    try:
        for i in range(args.held):
            stub = api_grpc.LedgerServiceStub(channels[i // per])
            calls.append(stub.SubmitWithBlobs.future(held(small), timeout=120))
            reader = stub.GetBlob(api.GetBlobRequest(sha256=hashlib.sha256(warm_blob).hexdigest()))
            next(iter(reader))
            readers.append(reader)
        time.sleep(1)
        held_health, held_cp = latency(check), latency(checkpoint)
        rss = memory(pid)["VmRSS"]
    finally:
        release.set()
        for call in calls:
            call.cancel()
        for reader in readers:
            reader.cancel()
        for c in channels:
            c.close()
    print(
        f"Health/Check: idle {idle_health[0]:.1f} ms; with {args.held} idle uploads and "
        f"{args.held} unread {args.mib} MiB GetBlob streams open: {held_health[0]:.1f} ms "
        f"(median of 20, worst {held_health[1]:.1f} ms; {held_health[0] / idle_health[0]:.1f}x)"
    )
    print(
        f"GetCheckpoint: idle {idle_cp[0]:.1f} ms; with them open: {held_cp[0]:.1f} ms "
        f"(worst {held_cp[1]:.1f} ms); server RSS with them open {(rss - before) / MiB:+.1f} "
        f"MiB ({(rss - before) / args.held / 2 / 1024:.0f} KiB a stream)"
    )


if __name__ == "__main__":
    main()
