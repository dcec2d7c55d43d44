"""Ingest on a folder of good images in every mode plus every kind of bad file."""

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

from pipelines.common.params import parse_config
from training.images import decode_png
from pipelines.stages.ingest import NothingUsable, ingest_flow
from pipelines.data.manifest import read_manifest
from pipelines.common.paths import Paths

pytestmark = pytest.mark.integration
PATCH = 32


def rng_image(seed: int, w: int = 48, h: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(img: Image.Image, path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


@pytest.fixture()
def messy_folder(tmp_path):
    """Returns (root, expected) where expected maps file name -> outcome."""
    src = tmp_path / "raw" / "mixed"
    expected = {}
    rgb = rng_image(1)
    save(Image.fromarray(rgb), src / "rgb.png"); expected["rgb.png"] = "accepted"
    save(Image.fromarray(rng_image(2)[..., 0]), src / "gray_L.png"); expected["gray_L.png"] = "accepted"
    la = Image.fromarray(np.dstack([rng_image(3)[..., 0], np.full((40, 48), 200, np.uint8)]), "LA")
    save(la, src / "gray_alpha_LA.png"); expected["gray_alpha_LA.png"] = "accepted"
    save(Image.fromarray(rng_image(4)).convert("P"), src / "palette_P.png"); expected["palette_P.png"] = "accepted"
    rgba = np.dstack([rng_image(5), np.full((40, 48), 255, np.uint8)])
    rgba[0, 0, 3] = 0  # one transparent pixel: composited on white
    save(Image.fromarray(rgba, "RGBA"), src / "alpha_RGBA.png"); expected["alpha_RGBA.png"] = "accepted"
    save(Image.fromarray(rng_image(6)).convert("CMYK"), src / "print_CMYK.tif"); expected["print_CMYK.tif"] = "accepted"
    deep = np.full((40, 48), 128 * 257, np.uint16)
    deep[0, 0] = 65535
    save(Image.fromarray(deep), src / "deep_16bit.png"); expected["deep_16bit.png"] = "accepted"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save(Image.fromarray(rng_image(7, w=64, h=40)), src / "nested" / "rotated.jpg", exif=exif, quality=95)
    expected["nested/rotated.jpg"] = "accepted"
    # Rejects, one of each kind.
    (src / "empty.png").write_bytes(b""); expected["empty.png"] = "empty"
    (src / "notes.txt").write_text("not an image\n"); expected["notes.txt"] = "not_an_image"
    buf = io.BytesIO()
    Image.fromarray(rng_image(8, 200, 200)).save(buf, format="PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]); expected["truncated.png"] = "truncated"
    save(Image.new("RGB", (3000, 2000)), src / "bomb.png"); expected["bomb.png"] = "decompression_bomb"
    save(Image.fromarray(rng_image(9, 20, 60)), src / "tiny.png"); expected["tiny.png"] = "too_small"
    save(Image.fromarray(rgb), src / "rgb_again.bmp"); expected["rgb_again.bmp"] = "duplicate"
    (src / ".hidden.png").write_bytes(b"hidden files are listed as skipped"); expected[".hidden.png"] = "hidden"
    # A QOI header cut after 14 bytes and named .png: Pillow raised IndexError on it.
    (src / "qoi_cut.png").write_bytes(b"qoif" + (4).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes([3, 0]))
    expected["qoi_cut.png"] = "format_not_allowed"
    (src / "drawing.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    expected["drawing.eps"] = "format_not_allowed"  # never handed to Ghostscript
    save(Image.fromarray(rng_image(11)), src / "icc.png", icc_profile=b"x" * 2_000_000)
    expected["icc.png"] = "metadata_too_large"
    (src / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3_000_000)); expected["huge.png"] = "file_too_large"
    outside = tmp_path / "elsewhere.png"
    save(Image.fromarray(rng_image(12)), outside)
    (src / "link_out.png").symlink_to(outside); expected["link_out.png"] = "link_outside_source"
    (src / "link_in.png").symlink_to(src / "rgb.png"); expected["link_in.png"] = "duplicate"  # inside: read
    (src / "loop.png").symlink_to(src / "loop.png"); expected["loop.png"] = "unreadable"
    (src / "dir_link").symlink_to(src / "nested"); expected["dir_link"] = "not_a_file"
    os.mkfifo(src / "pipe.png"); expected["pipe.png"] = "not_a_file"  # reading it would block forever
    val = tmp_path / "raw" / "valset"
    save(Image.fromarray(rng_image(10)), val / "v1.png")
    save(Image.fromarray(rgb), val / "same_as_train.png")  # duplicate across splits: val keeps it
    return tmp_path, expected, rgb


def make_cfg(root, patch=PATCH):
    return parse_config({
        "seed": 1,
        "acquire": {"collections": [{"name": "x", "dataset": "x"}]},
        "ingest": {
            "sources": [{"uri": str(root / "raw" / "mixed"), "split": "train"}, {"uri": str(root / "raw" / "valset"), "split": "val"}],
            "max_pixels": 1_000_000,
            "max_bytes": 2_000_000,
            "min_val_side": 16,
        },
        "tasks": {"sr_x4": {"patch_size": patch, "patches_per_image": 1}},
        "data": {"engine": "local"},
    })


def test_ingest_accepts_every_mode_and_rejects_every_bad_kind(prefect_harness, messy_folder):
    root, expected, rgb = messy_folder
    counts = ingest_flow(make_cfg(root), Paths(root))
    paths = Paths(root)
    manifest = read_manifest(paths.manifest)
    rejects = list(csv.DictReader(open(paths.rejects)))

    # The train copy of `rgb` loses to the identical val image; its BMP twin is a duplicate too.
    expected["rgb.png"] = "duplicate"
    want_train = sorted(k for k, v in expected.items() if v == "accepted")
    got_train = sorted(r.source_uri.split("/mixed/")[1] for r in manifest if r.split == "train")
    assert got_train == want_train
    assert sorted(r.source_uri.rsplit("/", 1)[1] for r in manifest if r.split == "val") == ["same_as_train.png", "v1.png"]
    got_rejects = {r["source_uri"].split("/mixed/")[1]: r["reason"] for r in rejects}
    assert got_rejects == {k: v for k, v in expected.items() if v != "accepted"}
    assert counts == {"accepted": len(want_train) + 2, "rejected": len(got_rejects)}

    by_name = {r.source_uri.rsplit("/", 1)[1]: r for r in manifest}
    for row in manifest:
        pixels = decode_png((paths.manifest_dir / row.path).read_bytes())
        assert pixels.shape == (row.height, row.width, 3) and pixels.dtype == np.uint8
    # Nothing good is lost: pixels are what the source held, converted to RGB.
    assert np.array_equal(decode_png((paths.manifest_dir / by_name["same_as_train.png"].path).read_bytes()), rgb)
    deep = decode_png((paths.manifest_dir / by_name["deep_16bit.png"].path).read_bytes())
    assert deep[0, 0].tolist() == [255, 255, 255] and deep[5, 5].tolist() == [128, 128, 128]
    alpha = decode_png((paths.manifest_dir / by_name["alpha_RGBA.png"].path).read_bytes())
    assert alpha[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    rotated = by_name["rotated.jpg"]
    assert (rotated.width, rotated.height) == (40, 64)  # EXIF orientation applied
    assert by_name["gray_L.png"].sha256 != by_name["palette_P.png"].sha256
    # Gray sources are remembered: SR benchmarks score them on gray values rather than on Y.
    assert {n: r.source_channels for n, r in by_name.items() if r.source_channels == 1} == {
        "gray_L.png": 1, "gray_alpha_LA.png": 1, "deep_16bit.png": 1}
    assert len({r.id for r in manifest}) == len(manifest)


def test_ingest_rerun_is_identical_and_leaves_no_temp_files(prefect_harness, messy_folder):
    root, _, _ = messy_folder
    paths = Paths(root)
    ingest_flow(make_cfg(root), paths)
    first = {p.relative_to(root): p.read_bytes() for p in paths.manifest_dir.rglob("*") if p.is_file()}
    ingest_flow(make_cfg(root), paths)
    second = {p.relative_to(root): p.read_bytes() for p in paths.manifest_dir.rglob("*") if p.is_file()}
    assert first == second
    assert not [p for p in paths.data.iterdir() if p.name.startswith(".")]


def test_patch_larger_than_every_image_fails_and_keeps_the_old_manifest(prefect_harness, messy_folder):
    root, _, _ = messy_folder
    paths = Paths(root)
    ingest_flow(make_cfg(root), paths)
    before = paths.manifest.read_bytes()
    with pytest.raises(NothingUsable, match=r"no train image left: all 24 train files .* were rejected "
                                            r"\(11 too_small.*at least 48 px on a side \(the largest tasks"):
        ingest_flow(make_cfg(root, patch=48), paths)  # every train image is 40 px on a side
    assert paths.manifest.read_bytes() == before
    assert not [p for p in paths.data.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_glob_source_and_summary_artifact(prefect_harness, messy_folder):
    import json

    from prefect.artifacts import Artifact

    root, _, _ = messy_folder
    cfg = parse_config({
        "acquire": {"collections": [{"name": "x", "dataset": "x"}]},
        "ingest": {"sources": [{"uri": str(root / "raw" / "mixed" / "**" / "*.jpg"), "split": "train"},
                               {"uri": str(root / "raw" / "valset" / "v*.png"), "split": "val"}],
                   "min_val_side": 16},
        "tasks": {"sr_x4": {"patch_size": PATCH, "patches_per_image": 1}},
        "data": {"engine": "local"},
    })
    counts = ingest_flow(cfg, Paths(root))
    manifest = read_manifest(Paths(root).manifest)
    # The glob goes through dir_link, a link to nested/ inside the source: the same picture again.
    assert counts == {"accepted": 2, "rejected": 1}
    assert sorted(r.id for r in manifest) == ["mixed_dir_link_rotated", "valset_v1"]  # the first in order
    artifact = Artifact.get("ingest-summary")
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert sorted((row["split"], row["outcome"], row["count"]) for row in table) == [
        ("train", "accepted", 1), ("train", "rejected: duplicate", 1), ("val", "accepted", 1)]
