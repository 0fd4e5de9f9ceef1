"""Find the videos of a real dataset on disk, in the layouts the community's preprocessing produces.

A source is a video file (avi, mp4, webm, ...) or a folder of frames (a folder may be named
``*.mp4``: TaiChi-HD's PNG version). ``find_sources(name, root, split, fold)`` returns a
``Listing``: the sources of one split, their labels (UCF101), and the listed sources that are
missing on disk. A missing root or a layout that doesn't match raises ``DatasetLayoutError``
with the expected tree in its message.

The validation split is held out of the train split by whole groups, so one actor, scene or
source video never spans train and val: the groups are UCF101's ``gNN`` (same actor and
background), TaiChi-HD's YouTube id (the name before the first ``#``) and Sky Time-lapse's
``<video>`` folder. ``val_groups`` takes the last ``VAL_FRACTION`` of the train split's groups in
natural sort order (at least one, never all); ``train`` is the rest, ``all`` is train, val and test.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vdt.errors import DataError

VIDEO_EXTS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FIXED_SPLITS = ("val", "test")  # evaluation splits: fixed clips, one per video, whatever the epoch
VAL_FRACTION = 0.1  # of the train split's groups, held out as the val split (UCF101: g24 and g25 in every fold)

EXPECTED = {
    "ucf101": """\
data.root = the folder holding UCF-101/ (or UCF-101/ itself):
  <root>/UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.avi
  <root>/ucfTrainTestlist/classInd.txt          "1 ApplyEyeMakeup"
  <root>/ucfTrainTestlist/trainlist0{1,2,3}.txt "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
  <root>/ucfTrainTestlist/testlist0{1,2,3}.txt  "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
  (ucfTrainTestlist/ may also sit inside UCF-101/; data.split=all without the lists walks every class folder)""",
    "taichi": """\
data.root = the TaiChi-HD folder (FOMM preprocessing):
  <root>/train/<id>.mp4          video files (--format .mp4)
  <root>/test/<id>.mp4
  or <root>/{train,test}/<id>.mp4/0000000.png ...   frame folders named like the video (--format .png)""",
    "sky": """\
data.root = the Sky Time-lapse folder:
  <root>/sky_train/<video>/<clip>/<video>_frames_00000001.jpg ...
  <root>/sky_test/<video>/<clip>/*.jpg
  (frame folders directly under <video>/ are accepted too)""",
    "physion": """\
data.root = the Physion folder (SlotFormer's layout of the released MP4s; docs/data.md#physion):
  <root>/PhysionTrainMP4s/<Scenario>_training_MP4s/<stimulus>_<NNNN>_img.mp4   (data.split=train|val)
  <root>/PhysionTrainMP4s/<Scenario>_readout_MP4s/<stimulus>_<NNNN>_img.mp4    (the readout's training videos)
  <root>/PhysionTrainMP4s/readout_labels.csv       ",ground truth outcome" / "<stimulus>_<NNNN>,True"
  <root>/PhysionTestMP4s/<Scenario>/mp4s-redyellow/<stimulus>-redyellow_<NNNN>_img.mp4   (data.split=test)
  <root>/PhysionTestMP4s/labels.csv                ",ground truth outcome" / "<stimulus>_<NNNN>_img,False"
  Scenario: Collide Contain Dominoes Drape Drop Link Roll Support (those present); a video may be a frame folder""",
}


class DatasetLayoutError(DataError):
    """The data root is missing or does not match the expected layout; the message shows that layout."""


def layout_error(name: str, root, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"data.name={name} data.root={root}: {problem}\nExpected layout:\n{EXPECTED[name]}")


@dataclass
class Listing:
    """The sources of one split. Paths are absolute; labels are -1 where the dataset has none."""

    paths: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # listed in a split file but not on disk
    classes: list = field(default_factory=list)  # class names, index = label


def natural_key(name: str) -> list:
    """Numeric-aware sort key: 'f2' < 'f10'."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def list_frames(folder) -> list:
    """Image files of a frame folder, numeric-aware sorted (names only)."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)]
    return sorted(names, key=natural_key)


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS


def _subdirs(path: Path) -> list:
    return sorted((p for p in path.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))


def val_groups(groups) -> set:
    """The held-out groups: the last VAL_FRACTION of the distinct ``groups`` in natural order (>= 1, never all)."""
    ordered = sorted(set(groups), key=natural_key)
    n = min(max(1, round(len(ordered) * VAL_FRACTION)), len(ordered) - 1)
    return set(ordered[len(ordered) - n:])


def _hold_out(listing: Listing, group_of, split: str) -> Listing:
    """The train or val part of the train split's ``listing``; ``group_of(path)`` names a source's group."""
    if split not in ("train", "val"):
        return listing
    held = val_groups([group_of(p) for p in listing.paths + listing.missing])

    def wanted(path: str) -> bool:
        return (group_of(path) in held) == (split == "val")

    kept = [(p, label) for p, label in zip(listing.paths, listing.labels, strict=True) if wanted(p)]
    return Listing([p for p, _ in kept], [label for _, label in kept], [p for p in listing.missing if wanted(p)],
                   listing.classes)


def find_sources(name: str, root, split: str, fold: int = 1) -> Listing:
    """The sources of ``split`` ('train', 'val', 'test' or 'all') of dataset ``name`` under ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(name, root, "the root folder does not exist")
    if name == "physion":
        from vdt.data.physion import physion_sources  # it builds on this module

        listing = physion_sources(root, split, fold)
    else:
        listing = {"ucf101": _ucf101, "taichi": _taichi, "sky": _sky}[name](root, split, fold)
    if not listing.paths and not listing.missing:
        raise layout_error(name, root, f"no videos found for split {split!r}")
    return listing


# ---------------------------------------------------------------- UCF101


def _ucf_dirs(root: Path) -> tuple:
    """(video folder, split-list folder or None)."""
    video_dir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    for lists in (root / "ucfTrainTestlist", video_dir / "ucfTrainTestlist", video_dir.parent / "ucfTrainTestlist"):
        if (lists / "classInd.txt").is_file():
            return video_dir, lists
    return video_dir, None


def _ucf101(root: Path, split: str, fold: int) -> Listing:
    video_dir, lists = _ucf_dirs(root)
    on_disk = {}  # 'class/file.avi' lower-cased -> path: the lists and folders disagree on case
    for class_dir in _subdirs(video_dir):
        for f in class_dir.iterdir():
            if _is_video(f):
                on_disk[f"{class_dir.name}/{f.name}".lower()] = f
    if not on_disk:
        raise layout_error("ucf101", root, f"no class folders with videos in {video_dir}")
    if lists is None:
        if split != "all":
            raise layout_error("ucf101", root, f"ucfTrainTestlist/classInd.txt not found (needed for split={split})")
        classes = sorted({p.parent.name for p in on_disk.values()})
        paths = [on_disk[k] for k in sorted(on_disk)]
        return Listing([str(p) for p in paths], [classes.index(p.parent.name) for p in paths], [], classes)
    classes = []
    for line in (lists / "classInd.txt").read_text().split("\n"):
        if line.strip():
            idx, cls = line.split()
            if int(idx) != len(classes) + 1:
                raise layout_error("ucf101", root, f"classInd.txt is not numbered 1, 2, ...: {line!r}")
            classes.append(cls)
    label_of = {c.lower(): i for i, c in enumerate(classes)}
    names = {"train": [f"trainlist0{fold}.txt"], "test": [f"testlist0{fold}.txt"]}
    names["all"], names["val"] = names["train"] + names["test"], names["train"]
    out = Listing(classes=classes)
    for list_name in names[split]:
        if not (lists / list_name).is_file():
            raise layout_error("ucf101", root, f"{lists / list_name} not found")
        for line in (lists / list_name).read_text().split("\n"):
            if not line.strip():
                continue
            rel = line.split()[0].replace("\\", "/")
            cls = rel.split("/")[0].lower()
            if cls not in label_of:
                raise layout_error("ucf101", root, f"{list_name}: class of {rel!r} is not in classInd.txt")
            path = on_disk.get(rel.lower())
            if path is None:
                out.missing.append(str(video_dir / rel))
            else:
                out.paths.append(str(path))
                out.labels.append(label_of[cls])
    return _hold_out(out, _ucf_group, split)


def _ucf_group(path: str) -> str:
    """'g08' for v_<Class>_g08_c01.avi: UCF101's groups share an actor and background."""
    match = re.search(r"_(g\d+)_c\d+", Path(path).name)
    return match.group(1) if match else Path(path).name


# ---------------------------------------------------------------- TaiChi-HD and Sky Time-lapse


def _split_dirs(name: str, root: Path, split: str, prefix: str) -> list:
    wanted = ["train", "test"] if split == "all" else ["train" if split == "val" else split]  # val: out of train
    dirs = [root / f"{prefix}{s}" for s in wanted]
    absent = [d.name for d in dirs if not d.is_dir()]
    if absent:
        raise layout_error(name, root, f"missing folder(s) {absent} for split {split!r}")
    return dirs


def _taichi(root: Path, split: str, fold: int) -> Listing:
    out = Listing()
    for d in _split_dirs("taichi", root, split, ""):
        for p in sorted(d.iterdir(), key=lambda p: natural_key(p.name)):
            if _is_video(p) or p.is_dir():  # a folder is the PNG version of one video
                out.paths.append(str(p))
                out.labels.append(-1)
    return _hold_out(out, lambda p: Path(p).name.split("#")[0], split)  # FOMM names: <youtube id>#<start>#<end>


def _sky(root: Path, split: str, fold: int) -> Listing:
    out = Listing()
    for d in _split_dirs("sky", root, split, "sky_"):
        for video in _subdirs(d):
            clips = _subdirs(video)
            for clip in clips or [video]:  # video/clip/frames, or video/frames
                out.paths.append(str(clip))
                out.labels.append(-1)
    return _hold_out(out, lambda p: Path(p).relative_to(root / "sky_train").parts[0], split)  # the <video> folder
