"""The validation scan: probe every source once, cache the result, log and judge the bad ones.

The scan index is a JSON file per (dataset, root) in ``<cache>/index/``. Each source is stored
with its signature (file: size and mtime; frame folder: entry count and mtime), so a second
construction probes only new or changed sources. ``<cache>`` is ``$VDT_CACHE_DIR`` if set,
else ``results/cache`` in the repository (ignored by git).
"""

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vdt.data.decode import BAD_DATA_ERRORS, probe
from vdt.errors import DataError

CACHE_ENV_VAR = "VDT_CACHE_DIR"
INDEX_VERSION = 1
WORST_SHOWN = 10


class BadDataError(DataError):
    """More of a dataset is unreadable, truncated or too short than data.max_bad_fraction allows."""


@dataclass(frozen=True)
class Skipped:
    """The sources a real dataset left out as bad (missing, unreadable, truncated, too short) and their list."""

    count: int
    total: int
    log: str  # bad_videos.txt: one '<path>\t<reason>' line per source

    def line(self, who: str) -> str:
        """The one line training and evaluation print when some were skipped."""
        return (f"{who}: skipped {self.count} of {self.total} videos (bad or too short, within "
                f"data.max_bad_fraction); the list: {self.log}")

    def record(self) -> dict:
        """For run.json."""
        return {"skipped": self.count, "total": self.total, "list": self.log}


def cache_root() -> Path:
    """``$VDT_CACHE_DIR``, else ``<repo>/results/cache``."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "results" / "cache"


def dataset_key(name: str, root) -> str:
    """'ucf101-<12 hex>': the dataset and its resolved root."""
    return f"{name}-{hashlib.sha256(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:12]}"


def signature(path: str) -> list:
    st = os.stat(path)
    if os.path.isdir(path):
        return [len(os.listdir(path)), st.st_mtime_ns]
    return [st.st_size, st.st_mtime_ns]


def _probe_one(path: str) -> dict:
    try:
        sig = signature(path)
    except OSError as e:
        return {"sig": None, "frames": 0, "error": f"unreadable: {e}"}
    try:
        return {"sig": sig, "frames": probe(path), "error": None}
    except BAD_DATA_ERRORS as e:
        return {"sig": sig, "frames": 0, "error": f"unreadable: {type(e).__name__}: {e}"}


def scan(paths: list, index_file: Path, workers: int = 4) -> dict:
    """{path: {'frames': int, 'error': str | None}} for every path, reusing the index where unchanged."""
    cached = {}
    if index_file.is_file():
        try:
            blob = json.loads(index_file.read_text())
            cached = blob["entries"] if blob.get("version") == INDEX_VERSION else {}
        except (OSError, ValueError, KeyError):
            cached = {}
    todo = []
    for p in paths:
        try:
            fresh = p in cached and cached[p]["sig"] == signature(p)
        except OSError:
            fresh = False
        if not fresh:
            todo.append(p)
    if todo:
        with ThreadPoolExecutor(workers) as pool:  # probing is mostly file I/O and C code
            results = pool.map(_probe_one, todo)
            bar = tqdm(results, total=len(todo), desc=f"scanning {index_file.stem}", disable=len(todo) < 100)
            cached.update(zip(todo, bar, strict=True))
        _write_json(index_file, {"version": INDEX_VERSION, "entries": cached})
    return {p: cached[p] for p in paths}


def _write_json(path: Path, blob: dict) -> None:
    """Atomic write (temp file + rename), so a concurrent reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(blob))
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write the scan index {path}: {e}; the next construction scans again", stacklevel=3)


def write_bad_log(path: Path, header: str, bad: list) -> None:
    """One '<path>\\t<reason>' line per bad source, after a '# ' header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {header}"] + [f"{p}\t{reason}" for p, reason in bad]
    path.write_text("\n".join(lines) + "\n")


def append_bad_log(path: Path, source: str, reason: str) -> None:
    """Record a failure found while reading (one short append: atomic across DataLoader workers)."""
    try:
        with open(path, "a") as f:
            f.write(f"{source}\t{reason}\n")
    except OSError:
        pass  # the log is a convenience; the failure is also counted on the dataset


def check_bad_fraction(bad: list, total: int, max_fraction: float, log: Path) -> None:
    """Raise BadDataError naming the worst files when more than ``max_fraction`` of ``total`` are bad."""
    if total and len(bad) / total <= max_fraction and len(bad) < total:
        return

    def severity(item):  # missing and unreadable first, then truncated, then the shortest
        reason = item[1]
        rank = 0 if reason.startswith(("missing", "unreadable")) else 1 if "truncated" in reason else 2
        frames = int(reason.split(": ")[1].split()[0]) if reason.startswith("too short") else 0
        return rank, frames, item[0]

    worst = sorted(bad, key=severity)[:WORST_SHOWN]
    listing = "\n".join(f"  {p}: {reason}" for p, reason in worst)
    raise BadDataError(
        f"{len(bad)} of {total} videos are bad ({len(bad) / max(total, 1):.1%} > data.max_bad_fraction="
        f"{max_fraction:g}). The worst:\n{listing}\nAll of them are listed in {log}. Fix or remove them, or raise "
        f"data.max_bad_fraction (short clips count too: a lower data.frames or data.stride keeps more)."
    )
