"""images.py: every Pillow mode becomes the right uint8 pixels; bad files give short reasons."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_builder.data.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    find_images,
    load_image,
    resize_image,
    to_channels,
    walk_names,
)
from resnet_builder.errors import UserError


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _rgb(height: int = 6, width: int = 5) -> np.ndarray:
    values = np.arange(height * width * 3) * 37 % 256
    return values.astype(np.uint8).reshape(height, width, 3)


def test_extensions_cover_common_formats():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif"} <= IMAGE_EXTENSIONS


def test_find_images_recursive_sorted_case_insensitive(tmp_path):
    for rel in ["b/z.PNG", "a/y.jpg", "a/sub/x.JpEg", "a/notes.txt", ".hidden/h.png",
                "a/.DS_Store", "c.gif"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/sub/x.JpEg", "a/y.jpg", "b/z.PNG", "c.gif"]
    single = tmp_path / "c.gif"
    assert find_images(single) == [single]
    with pytest.raises(UserError, match="no such file or folder"):
        find_images(tmp_path / "missing")


def test_folder_links_up_the_tree_are_named_not_followed(tmp_path):
    """A link in a/ to the data folder (or above it, or to a/ itself) listed b's files as a's;
    a link to a sibling or outside folder is still followed, once."""
    for rel in ["data/a/x.png", "data/b/y.png", "outside/z.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    a = tmp_path / "data" / "a"
    (a / "sub").mkdir()
    for name, target in [("up", ".."), ("top", "/"), ("self", "."), ("deep", "../a")]:
        os.symlink(target, a / name)
    os.symlink("../..", a / "sub" / "back")  # from a/sub to the data folder
    os.symlink(tmp_path / "outside", a / "out")
    os.symlink(tmp_path / "outside", a / "sub" / "again")  # the same folder: listed once
    refused: list[OSError] = []
    names = sorted(rel for rel, _ in walk_names(a, unreadable=refused.append))
    assert names == ["out/z.png", "x.png"]
    assert sorted(Path(e.filename).name for e in refused) == ["back", "deep", "self", "top", "up"]
    assert all("a link back up the tree, to " in e.strerror for e in refused)


def test_rgb_png_round_trips_and_converts_to_luma(tmp_path):
    pixels = _rgb()
    path = _save(Image.fromarray(pixels), tmp_path / "rgb.png")
    out = load_image(path, 3)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, pixels)
    gray = load_image(path, 1)
    assert gray.shape == (6, 5, 1)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(pixels).convert("L")))
    np.testing.assert_array_equal(to_channels(pixels, 1), gray)


def test_grayscale_png_is_repeated_for_rgb(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    path = _save(Image.fromarray(gray), tmp_path / "gray.png")
    np.testing.assert_array_equal(load_image(path, 1)[..., 0], gray)
    rgb = load_image(path, 3)
    assert rgb.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 0, 128], [10, 20, 30, 255]]], np.uint8)
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    out = load_image(path, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # fully transparent -> white
    np.testing.assert_array_equal(out[0, 1], [127, 127, 127])  # black at half alpha -> mid gray
    np.testing.assert_array_equal(out[0, 2], [10, 20, 30])  # opaque keeps its colour


def test_gray_alpha_is_composited_on_white(tmp_path):
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))
    la.putpixel((1, 0), (40, 255))
    out = load_image(_save(la, tmp_path / "la.png"), 1)
    np.testing.assert_array_equal(out[..., 0], [[255, 40]])


def test_palette_images_use_palette_colours_and_transparency(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 200, 10, 20, 0, 0, 255] + [0] * (253 * 3))
    pal.putpixel((0, 0), 1)
    pal.putpixel((1, 0), 2)
    out = load_image(_save(pal, tmp_path / "p.png"), 3)
    np.testing.assert_array_equal(out[0], [[200, 10, 20], [0, 0, 255]])
    out = load_image(_save(pal, tmp_path / "pt.png", transparency=2), 3)
    np.testing.assert_array_equal(out[0], [[200, 10, 20], [255, 255, 255]])


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 65535]], np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    out = load_image(path, 1)
    np.testing.assert_array_equal(out[..., 0], [[0, 100, 128, 255]])
    np.testing.assert_array_equal(load_image(path, 3)[0, 3], [255, 255, 255])


def test_32bit_integer_mode_is_scaled_like_16bit(tmp_path):
    values = np.array([[0, 257 * 7, 70000]], np.int32)
    path = _save(Image.fromarray(values), tmp_path / "i32.tif")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(load_image(path, 1)[..., 0], [[0, 7, 255]])


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (2, 2), (255, 0, 0, 0))  # pure cyan
    out = load_image(_save(cmyk, tmp_path / "c.tif"), 3)
    np.testing.assert_array_equal(out[0, 0], [0, 255, 255])


def test_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = load_image(path, 3)
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)  # 2 rows, 4 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    path = _save(Image.fromarray(pixels), tmp_path / "rot.jpg", exif=exif)
    assert load_image(path, 3).shape == (4, 2, 3)


def _reason(path: Path) -> str:
    with pytest.raises(ImageError) as info:
        load_image(path, 3)
    assert isinstance(info.value, UserError)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value.reason


def test_bad_files_give_short_reasons(tmp_path):
    good = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "good.png")
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    jpg = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "good.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "folder.png").mkdir()
    assert _reason(tmp_path / "trunc.png") == "truncated file"
    assert _reason(tmp_path / "trunc.jpg") == "truncated file"
    assert _reason(tmp_path / "empty.png") == "empty file"
    assert _reason(tmp_path / "text.jpg").startswith("not an image")
    assert _reason(tmp_path / "missing.png") == "file not found"
    assert _reason(tmp_path / "folder.png") == "is a folder, not a file"


def test_corrupt_png_data_is_reported(tmp_path):
    good = _save(Image.fromarray(_rgb(32, 32)), tmp_path / "good.png").read_bytes()
    start = good.index(b"IDAT") + 8
    bad = good[:start] + bytes(b ^ 0xFF for b in good[start:start + 40]) + good[start + 40:]
    (tmp_path / "bad.png").write_bytes(bad)
    reason = _reason(tmp_path / "bad.png")
    assert reason.startswith(("corrupt image data", "truncated file"))


def test_resize_and_prepare(tmp_path):
    pixels = _rgb(10, 20)
    assert resize_image(pixels, 8).shape == (8, 8, 3)
    assert resize_image(pixels[..., :1], 16).shape == (16, 16, 1)
    assert resize_image(pixels, 10) is not pixels  # non-square is stretched
    same = _rgb(8, 8)
    assert resize_image(same, 8) is same
    flat = np.full((4, 4, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_image(flat, 9), np.full((9, 9, 3), 77))



def test_a_link_into_another_class_folder_is_named_not_followed(tmp_path):
    """Walking class a with the data folder as its fence: a link to b (or into b) listed b's
    images as a's too; a link outside the data folder is still followed."""
    for rel in ["data/a/x.png", "data/b/deep/y.png", "outside/z.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    a = tmp_path / "data" / "a"
    os.symlink("../b", a / "b_too")
    os.symlink(tmp_path / "data" / "b" / "deep", a / "deeper")
    os.symlink(tmp_path / "outside", a / "out")
    refused: list[OSError] = []
    names = sorted(rel for rel, _ in walk_names(a, unreadable=refused.append,
                                                fence=tmp_path / "data"))
    assert names == ["out/z.png", "x.png"]
    assert sorted(Path(e.filename).name for e in refused) == ["b_too", "deeper"]
    assert all("a link into another class folder, " in e.strerror for e in refused)
