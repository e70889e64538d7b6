"""Where the image workers' time goes: py-spy on a few pool processes, and every process's CPU seconds.

``python bench/run_bench.py --profile LATENCY_S`` uses it; nothing here runs in ``make bench``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

#: On-CPU samples of this many pool processes: a py-spy for each of sixteen would take the CPU it measures.
PROFILED_PROCESSES = 4

#: The service's own steps of an image, by the first frame of theirs found on a sample's stack (py-spy names a
#: method with its class: "Recorder.flush (processing/batch.py:210)").
CONCERNS = (
    ("compress (imaging/pipeline", "pipeline.compress (decode, resample, encode)"),
    ("claim_or_find (outputs/encode_claims", "the output's look-up and claim (encode_claims.claim_or_find)"),
    ("mark_stored (outputs/encode_claims", "the output marked stored (encode_claims.mark_stored)"),
    ("fetch_image_revalidated (fetching/fetcher", "the download (fetcher.fetch_image_revalidated)"),
    ("known_source (outputs/variants", "the source's validators (variants.known_source)"),
    ("flush (processing/batch", "the batch's records (Recorder.flush)"),
    ("claim_images (lifecycle/claims", "the batch's claim (claims.claim_images)"),
    ("fill_queue (queueing/dispatch", "the refill (dispatch.fill_queue)"),
    ("put (storage/", "the output's store (storage put)"),
)


class Recorders:
    """py-spy recording each of ``pids`` into ``folder`` until the block ends (a context manager)."""

    def __init__(self, pids: list[int], folder: Path) -> None:
        self.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.outputs = [folder / f"worker-{pid}.txt" for pid in pids]
        self.pids = pids
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Recorders:
        for pid, output in zip(self.pids, self.outputs, strict=True):
            argv = [self.py_spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
            argv += ["--format", "raw", "--output", str(output)]
            self.processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def merged(self, path: Path) -> Path:
        path.write_text("".join(output.read_text(errors="replace") for output in self.outputs if output.exists()))
        return path


def _samples(path: Path):
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def by_concern(path: Path) -> str:
    """Share of the samples spent in each of the service's steps of an image."""
    shares: Counter[str] = Counter()
    for frames, count in _samples(path):
        concern = next(
            (name for frame in frames for step, name in CONCERNS if step in frame),
            "process_image, the rest" if any(f.startswith("process_image") for f in frames) else "celery, the rest",
        )
        shares[concern] += count
    total = sum(shares.values()) or 1
    return "\n".join(f"{count / total:6.1%}  {name}" for name, count in shares.most_common())


def summarize(path: Path, top: int = 25) -> str:
    """Share of samples per function, inclusive (on the stack) and self (at the top)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for frames, count in _samples(path):
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; inclusive share, self share, function"]
    lines += [f"{n / total:6.1%} {own[frame] / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("top self:")
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(12)]
    return "\n".join(lines)
