"""Physion (Bear et al., NeurIPS 2021 Datasets and Benchmarks), in the layout public readout pipelines use.

The layout is SlotFormer's preparation of the released MP4 archives (pairlab/SlotFormer: docs/data.md,
slotformer/base_slots/datasets/physion.py and its splits/Physion/*.json); the readout labels file is the
Physion repository's data/readout_labels.csv (cogtoolslab/physics-benchmarking-neurips2021)::

    <root>/PhysionTrainMP4s/<Scenario>_training_MP4s/<stimulus>_<NNNN>_img.mp4    dynamics training, no labels
    <root>/PhysionTrainMP4s/<Scenario>_readout_MP4s/<stimulus>_<NNNN>_img.mp4     readout training
    <root>/PhysionTrainMP4s/readout_labels.csv     header ",ground truth outcome"; rows "<stimulus>_<NNNN>,True"
    <root>/PhysionTestMP4s/<Scenario>/mp4s-redyellow/<stimulus>-redyellow_<NNNN>_img.mp4   test
    <root>/PhysionTestMP4s/labels.csv              the same columns; rows name the video without "-redyellow"

Scenarios: ``SCENARIOS``. A video may also be a folder of its frames named like it without ".mp4"
(SlotFormer's ``000000.jpg`` ...). The label is Physion's object contact prediction: does the red
object touch the yellow one during the video (True/False). Label keys are matched after dropping
".mp4", "-redyellow" and a trailing "_img", from the video's name and from the row alike.

As a ``data.name=physion`` dataset (``vdt.data.layouts.find_sources``): ``train`` and ``val`` are the
dynamics training videos, val holding out whole stimuli (the name before ``_<NNNN>``), ``test`` the
test videos, ``all`` both. ``readout_listing`` gives the labelled subsets of the readout protocol
(``metrics/physion_readout.py``): ``readout`` (fit the readout) and ``test`` (score it).
"""

import csv
import re
from pathlib import Path

from vdt.data.layouts import EXPECTED, DatasetLayoutError, Listing, _hold_out, _is_video, natural_key
from vdt.errors import PathError

SCENARIOS = ("Collide", "Contain", "Dominoes", "Drape", "Drop", "Link", "Roll", "Support")
TRAIN_DIR, TEST_DIR = "PhysionTrainMP4s", "PhysionTestMP4s"
LABEL_FILES = {"readout": f"{TRAIN_DIR}/readout_labels.csv", "test": f"{TEST_DIR}/labels.csv"}
LABEL_COLUMN = "ground truth outcome"


class PhysionLayoutError(DatasetLayoutError, PathError):
    """A Physion root that does not match the layout; the message names the bad path and shows the layout."""


def _error(path, problem: str) -> PhysionLayoutError:
    return PhysionLayoutError(f"data.name=physion: {path}: {problem}\nExpected layout:\n{EXPECTED['physion']}")


def video_key(name: str) -> str:
    """The label key of a video or label row: without '.mp4', '-redyellow' and a trailing '_img'."""
    name = name[:-4] if name.lower().endswith(".mp4") else name
    return re.sub(r"_img$", "", name.replace("-redyellow", ""))


def stimulus(path: str) -> str:
    """A video's stimulus (its group: the name before '_<NNNN>')."""
    return re.sub(r"_\d+$", "", video_key(Path(path).name))


def _videos(folder: Path) -> list:
    """The videos of a folder: .mp4 files, and frame folders (named like a video without '.mp4')."""
    found = [p for p in folder.iterdir() if _is_video(p) or p.is_dir()]
    return [str(p) for p in sorted(found, key=lambda p: natural_key(p.name))]


def subset_videos(root, subset: str) -> list:
    """The video paths of ``subset``: 'training', 'readout' or 'test', every scenario found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _error(root, "the root folder does not exist")
    if subset == "test":
        base = root / TEST_DIR
        folders = [base / s / "mp4s-redyellow" for s in SCENARIOS if (base / s).is_dir()]
        expected = f"{base}/<Scenario>/mp4s-redyellow/"
    elif subset in ("training", "readout"):
        base = root / TRAIN_DIR
        folders = [base / f"{s}_{subset}_MP4s" for s in SCENARIOS]
        expected = f"{base}/<Scenario>_{subset}_MP4s/"
    else:
        raise ValueError(f"subset: unknown {subset!r}; choose training, readout or test")
    if not base.is_dir():
        raise _error(base, "folder not found")
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise _error(base, f"no scenario folder {expected} (scenarios: {', '.join(SCENARIOS)})")
    videos = [v for f in folders for v in _videos(f)]
    if not videos:
        raise _error(base, f"no videos in {', '.join(str(f) for f in folders)}")
    return videos


def read_labels(root, subset: str) -> dict:
    """{video key: 0 or 1} from the subset's label file (``LABEL_FILES``)."""
    path = Path(root).expanduser() / LABEL_FILES[subset]
    if not path.is_file():
        raise _error(path, f"label file not found (the {subset} subset's labels)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or LABEL_COLUMN not in rows[0]:
        raise _error(path, f"no {LABEL_COLUMN!r} column in the header {rows[0] if rows else '(empty file)'}")
    col = rows[0].index(LABEL_COLUMN)
    labels = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        value = row[col].strip().lower()
        if value not in ("true", "false", "1", "0"):
            raise _error(path, f"line {n}: label {row[col]!r} is not True/False")
        labels[video_key(row[0].strip())] = int(value in ("true", "1"))
    return labels


def readout_listing(root, subset: str) -> Listing:
    """The labelled videos of 'readout' or 'test'; a video without a label row is an error naming it."""
    if subset not in LABEL_FILES:
        raise ValueError(f"subset: unknown {subset!r}; choose from {tuple(LABEL_FILES)}")
    videos = subset_videos(root, subset)  # the root and the folders first, then the labels
    labels = read_labels(root, subset)
    out = Listing(classes=["no contact", "contact"])
    for path in videos:
        key = video_key(Path(path).name)
        if key not in labels:
            raise _error(path, f"no row {key!r} in {Path(root).expanduser() / LABEL_FILES[subset]}")
        out.paths.append(path)
        out.labels.append(labels[key])
    return out


def physion_sources(root: Path, split: str, fold: int = 1) -> Listing:
    """``find_sources`` for data.name=physion: train/val the dynamics training videos, test the test videos."""
    out = Listing()
    if split in ("train", "val", "all"):
        training = Listing(subset_videos(root, "training"))
        training.labels = [-1] * len(training.paths)
        part = training if split == "all" else _hold_out(training, stimulus, split)
        out.paths += part.paths
        out.labels += part.labels
    if split in ("test", "all"):
        test = subset_videos(root, "test")
        out.paths += test
        out.labels += [-1] * len(test)
    return out
