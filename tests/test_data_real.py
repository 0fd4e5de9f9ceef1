"""Real-video datasets on tiny fixtures written here: UCF101, TaiChi-HD (mp4 and PNG), Sky Time-lapse; their val splits.

Every frame of a fixture video is flat grey at level 10 * (frame index) + 10, so a decoded
clip tells which source frames it holds (mpeg4 keeps flat frames within a level or two).
"""

import os
import shutil

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vdt.config import DataConfig
from vdt.data import DatasetLayoutError, build_dataset
from vdt.data import scan as scan_module
from vdt.data.decode import resize_crop
from vdt.data.layouts import val_groups
from vdt.data.scan import BadDataError

CLASSES = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
ON_DISK_NAME = {"HandstandPushups": "HandStandPushups"}  # UCF101's real case mismatch


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_CACHE_DIR", str(tmp_path / "cache"))


def frame(i, h=24, w=32):
    return np.full((h, w, 3), 10 * i + 10, np.uint8)


def write_video(path, n, codec="mpeg4"):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_frames(folder, n, ext="png", pad=7):
    folder.mkdir(parents=True)
    for i in range(n):
        name = f"{i:0{pad}d}.{ext}" if pad else f"frame_{i}.{ext}"
        Image.fromarray(frame(i)).save(folder / name)


def frame_ids(video):
    """Source frame index of each frame of a (T, C, H, W) clip in [-1, 1]."""
    level = (video.mean(dim=(1, 2, 3)) + 1) * 127.5
    return [round((v - 10) / 10) for v in level.tolist()]


def make_ucf(root, frames=20, lists_inside=False):
    videos, lists = root / "UCF-101", (root / "UCF-101" if lists_inside else root) / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    for fold in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(CLASSES):
            for g in (1, 2, 3):
                rel = f"{c}/v_{c}_g{g:02d}_c01.avi"  # the lists spell the class as classInd does
                (test.append(rel) if g == fold else train.append(f"{rel} {i + 1}"))
        (lists / f"trainlist0{fold}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{fold}.txt").write_text("\n".join(test) + "\n")
    for c in CLASSES:
        (videos / c).mkdir(parents=True)
        for g in (1, 2, 3):
            write_video(videos / c / f"v_{ON_DISK_NAME.get(c, c)}_g{g:02d}_c01.avi", frames)
    return root


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    return make_ucf(tmp_path_factory.mktemp("ucf"))


def cfg(name, root, **kw):
    return DataConfig(**{"name": name, "root": str(root), "frames": 4, "size": 16, **kw})


# ---------------------------------------------------------------- UCF101


def test_ucf_splits_labels_and_case(ucf):
    train = build_dataset(cfg("ucf101", ucf, class_labels=True), "train")
    test = build_dataset(cfg("ucf101", ucf, class_labels=True), "test")
    every = build_dataset(cfg("ucf101", ucf), "all")
    assert (len(train), len(test), len(every)) == (3, 3, 9) and not train.bad  # HandStandPushups found (g03 is val)
    assert train.num_classes == 3 and train.classes == CLASSES
    for ds in (train, test):
        for i in range(len(ds)):
            video, label = ds[i]
            assert video.shape == (4, 3, 16, 16) and isinstance(label, int)
            assert CLASSES[label].lower() in ds.paths[i].lower()  # 0-based from classInd's 1-based
    assert all("_g01_" in p for p in test.paths)  # fold 1 tests group 1
    fold2 = build_dataset(cfg("ucf101", ucf, fold=2), "test")
    assert all("_g02_" in p for p in fold2.paths)
    assert isinstance(every[0], torch.Tensor)  # no labels unless asked


@pytest.mark.parametrize("inside", [False, True])
def test_ucf_root_may_be_the_video_folder(tmp_path, inside):
    root = make_ucf(tmp_path / "data", frames=8, lists_inside=inside)
    ds = build_dataset(cfg("ucf101", root / "UCF-101"), "test")
    assert len(ds) == 3


def test_eval_clips_are_centred_and_deterministic(ucf):
    ds = build_dataset(cfg("ucf101", ucf, stride=3), "test")  # 20 frames, span 10: room 10, centre 5
    first = ds[1]
    assert frame_ids(first) == [5, 8, 11, 14]
    ds.set_epoch(7)
    assert torch.equal(ds[1], first)
    assert torch.equal(build_dataset(cfg("ucf101", ucf, stride=3), "test")[1], first)
    assert ds.protocol()["offset"] == "centre of the video" and ds.protocol()["num_clips"] == 3


def test_train_clips_random_per_epoch_but_reproducible(ucf):
    ds = build_dataset(cfg("ucf101", ucf, stride=2, seed=1), "train")
    starts = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        ids = frame_ids(ds[0])
        assert ids == list(range(ids[0], ids[0] + 8, 2))  # frames at the stride
        starts.append(ids[0])
    assert len(set(starts)) > 1
    ds.set_epoch(3)
    assert frame_ids(ds[0])[0] == starts[3]


def test_dataloader_workers(ucf):
    ds = build_dataset(cfg("ucf101", ucf, class_labels=True), "train")
    videos, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)))
    assert torch.equal(videos, torch.stack([ds[i][0] for i in range(3)]))
    assert labels.tolist() == [ds[i][1] for i in range(3)]


# ---------------------------------------------------------------- TaiChi-HD and Sky


def test_taichi_mp4_and_png_layouts_agree(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for k in range(n):
            (tmp_path / "mp4" / split).mkdir(parents=True, exist_ok=True)
            write_video(tmp_path / "mp4" / split / f"id{k}#000010#000040.mp4", 12, codec="libx264")
            write_frames(tmp_path / "png" / split / f"id{k}#000010#000040.mp4", 12)
    mp4 = build_dataset(cfg("taichi", tmp_path / "mp4", stride=2), "test")
    png = build_dataset(cfg("taichi", tmp_path / "png", stride=2), "test")
    assert len(mp4) == len(png) == 1 and len(build_dataset(cfg("taichi", tmp_path / "png"), "all")) == 3
    assert frame_ids(png[0]) == [2, 4, 6, 8]  # 12 frames, span 7: centre offset 2
    assert torch.allclose(mp4[0], png[0], atol=0.05)


def test_sky_two_levels_and_numeric_frame_order(tmp_path):
    for split in ("sky_train", "sky_test"):
        write_frames(tmp_path / split / "vidA" / "vidA_1", 12, ext="jpg", pad=0)  # frame_2 before frame_10
        write_frames(tmp_path / split / "vidA" / "vidA_2", 12, ext="jpg", pad=0)
        write_frames(tmp_path / split / "vidB" / "vidB_1", 12, ext="jpg", pad=0)
    ds = build_dataset(cfg("sky", tmp_path, frames=12), "all")
    assert len(ds) == 6
    assert frame_ids(ds[0]) == list(range(12))
    assert [p.split("/")[-2:] for p in ds.paths[:3]] == [["vidA", "vidA_1"], ["vidA", "vidA_2"], ["vidB", "vidB_1"]]


# ---------------------------------------------------------------- the val split: whole groups held out of train


def test_val_groups_rule():
    ucf_groups = [f"g{g:02d}" for g in range(1, 26)]
    for fold in (1, 2, 3):  # the official test groups: g01-g07, g08-g14, g15-g21; val is g24 and g25 in each fold
        train = [g for g in ucf_groups if not 7 * (fold - 1) < int(g[1:]) <= 7 * fold]
        assert val_groups(train * 3) == {"g24", "g25"}  # repeats (one entry per video) change nothing
    assert val_groups(["b10", "b9", "a"]) == {"b10"}  # natural order, at least one group
    assert val_groups([f"id{i}" for i in range(40)]) == {"id36", "id37", "id38", "id39"}  # 10%
    assert val_groups(["only"]) == set()  # never the whole train split


def test_ucf_val_is_held_out_of_the_train_list_by_groups(ucf):
    train, val, test = (build_dataset(cfg("ucf101", ucf, class_labels=True), s) for s in ("train", "val", "test"))
    assert all("_g03_" in p for p in val.paths) and len(val) == 3  # fold 1 trains on g02, g03: g03 is held out
    assert all("_g02_" in p for p in train.paths)
    listed = build_dataset(cfg("ucf101", ucf), "all").paths
    assert sorted(train.paths + val.paths + test.paths) == sorted(listed)  # disjoint and complete
    assert [val[i][1] for i in range(3)] == [0, 1, 2]  # labels from classInd
    fold3 = build_dataset(cfg("ucf101", ucf, fold=3), "val")  # fold 3 trains on g01, g02
    assert all("_g02_" in p for p in fold3.paths)


def test_val_clips_are_centred_and_fixed(ucf):
    ds = build_dataset(cfg("ucf101", ucf, stride=3), "val")
    first = ds[0]
    assert frame_ids(first) == [5, 8, 11, 14]
    ds.set_epoch(4)
    assert torch.equal(ds[0], first)
    assert ds.protocol()["split"] == "val" and ds.protocol()["offset"] == "centre of the video"


def test_taichi_val_holds_out_whole_youtube_ids(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    names = ["idA#000010#000040", "idB#000000#000030", "idB#000050#000090", "idA#000100#000140", "idC#000001#000030"]
    for n in names:
        write_frames(tmp_path / "train" / f"{n}.mp4", 6)
    write_frames(tmp_path / "test" / "idZ#000000#000030.mp4", 6)
    train, val = build_dataset(cfg("taichi", tmp_path), "train"), build_dataset(cfg("taichi", tmp_path), "val")
    assert [os.path.basename(p).split("#")[0] for p in val.paths] == ["idC"]
    assert sorted(os.path.basename(p).split("#")[0] for p in train.paths) == ["idA", "idA", "idB", "idB"]
    assert build_dataset(cfg("taichi", tmp_path), "val").paths == val.paths  # deterministic


def test_sky_val_holds_out_whole_video_folders(tmp_path):
    for video, clips in (("vidA", 2), ("vidB", 1), ("vidC", 2)):
        for c in range(clips):
            write_frames(tmp_path / "sky_train" / video / f"{video}_{c}", 4, ext="jpg")
    write_frames(tmp_path / "sky_test" / "vidZ" / "vidZ_0", 4, ext="jpg")
    train, val = build_dataset(cfg("sky", tmp_path), "train"), build_dataset(cfg("sky", tmp_path), "val")
    assert [p.split("/")[-2] for p in val.paths] == ["vidC", "vidC"]
    assert [p.split("/")[-2] for p in train.paths] == ["vidA", "vidA", "vidB"]
    assert len(build_dataset(cfg("sky", tmp_path), "all")) == 6


# ---------------------------------------------------------------- bad data and layout errors


def test_bad_files_skipped_counted_logged_and_thresholded(tmp_path):
    split = tmp_path / "taichi" / "test"
    split.mkdir(parents=True)
    for k in range(5):
        write_video(split / f"ok{k}.mp4", 10)
    (split / "garbage.mp4").write_bytes(os.urandom(4000))
    data = (split / "ok0.mp4").read_bytes()
    (split / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_video(split / "short.mp4", 3)
    ds = build_dataset(cfg("taichi", tmp_path / "taichi", max_bad_fraction=0.5), "test", log_dir=tmp_path / "run")
    assert len(ds) == 5 and len(ds.bad) == 3 and ds.protocol()["num_bad"] == 3
    log = (tmp_path / "run" / "bad_videos.txt").read_text()
    for name in ("garbage.mp4", "truncated.mp4", "short.mp4\ttoo short: 3 frames"):
        assert name in log
    assert "ok0.mp4" not in log
    with pytest.raises(BadDataError, match="3 of 8 videos are bad") as err:
        build_dataset(cfg("taichi", tmp_path / "taichi"), "test", log_dir=tmp_path / "run")
    assert "garbage.mp4" in str(err.value) and "data.max_bad_fraction" in str(err.value)


def test_failure_at_read_time_substitutes_and_counts(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    for k in range(4):
        write_video(split / f"v{k}.mp4", 8)
    ds = build_dataset(cfg("taichi", tmp_path), "train", log_dir=tmp_path / "run")
    shutil.copy(split / "v1.mp4", tmp_path / "keep.mp4")
    (split / "v1.mp4").write_bytes(b"\0" * 100)  # broken after the scan
    video = ds[1]
    assert video.shape == (4, 3, 16, 16) and ds.read_failures == 1
    assert ds.read(1)[2] != 1  # served by another source
    assert "v1.mp4\tfailed when read" in (tmp_path / "run" / "bad_videos.txt").read_text()


def test_scan_index_reused_and_refreshed(tmp_path, monkeypatch):
    split = tmp_path / "test"
    split.mkdir()
    for k in range(3):
        write_video(split / f"v{k}.mp4", 8)
    calls = []
    real_probe = scan_module.probe
    monkeypatch.setattr(scan_module, "probe", lambda p: calls.append(p) or real_probe(p))
    build_dataset(cfg("taichi", tmp_path), "test")
    assert len(calls) == 3
    build_dataset(cfg("taichi", tmp_path), "test")
    assert len(calls) == 3  # the second construction reads the index
    write_video(split / "v1.mp4", 9)
    os.utime(split / "v1.mp4", ns=(1, 1))
    assert build_dataset(cfg("taichi", tmp_path), "test").num_frames[1] == 9
    assert calls[3:] == [str(split / "v1.mp4")]


@pytest.mark.parametrize("name,make,problem", [
    ("ucf101", lambda r: None, "does not exist"),
    ("taichi", lambda r: (r / "videos").mkdir(parents=True), "missing folder"),
    ("sky", lambda r: (r / "sky_train").mkdir(parents=True), "missing folder"),
    ("ucf101", lambda r: (r / "UCF-101" / "Basketball").mkdir(parents=True), "no class folders"),
])
def test_layout_errors_show_the_expected_tree(tmp_path, name, make, problem):
    make(tmp_path / "root")
    with pytest.raises(DatasetLayoutError, match=problem) as err:
        build_dataset(cfg(name, tmp_path / "root"), "test")
    assert "Expected layout" in str(err.value) and str(tmp_path / "root") in str(err.value)


def test_ucf_without_lists_needs_split_all(tmp_path):
    root = make_ucf(tmp_path / "d", frames=8)
    shutil.rmtree(root / "ucfTrainTestlist")
    with pytest.raises(DatasetLayoutError, match="classInd.txt"):
        build_dataset(cfg("ucf101", root), "train")
    assert len(build_dataset(cfg("ucf101", root), "all")) == 9


def test_resize_by_shorter_side_then_centre_crop():
    frames = np.zeros((1, 20, 40, 3), np.uint8)  # 20 x 40: the middle 20 columns survive the crop
    frames[:, :, 10:30] = 255
    out = resize_crop(frames, 10)
    assert out.shape == (1, 3, 10, 10)
    assert torch.equal(out[..., 1:-1], torch.ones_like(out[..., 1:-1]))  # the edges blur (antialias)
    frames = np.zeros((1, 20, 40, 3), np.uint8)
    frames[:, :, :8] = 255  # only outside the centre square
    assert torch.equal(resize_crop(frames, 10), -torch.ones(1, 3, 10, 10))
    assert resize_crop(frames, 10, channels=1).shape == (1, 1, 10, 10)
