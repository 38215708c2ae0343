"""Shared image checks: safe path resolution, header sizes with EXIF, bomb guard, errors."""

import numpy as np
import pytest
from PIL import Image

from grape_instances.core.errors import GrapeInputError
from grape_instances.core.images import (
    decode_image,
    list_image_files,
    read_image_size,
    resolve_image_path,
)


def write_jpeg(path, width=50, height=30, orientation=None, seed=0):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    if orientation is None:
        img.save(path, quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, quality=90, exif=exif)
    return path


def test_size_from_header_applies_exif_orientation_like_detectron2(tmp_path):
    plain = write_jpeg(tmp_path / "plain.jpg", 50, 30)
    rotated = write_jpeg(tmp_path / "rotated.jpg", 50, 30, orientation=6)
    assert read_image_size(plain)[:2] == (50, 30)
    size = read_image_size(rotated)
    assert (size.width, size.height, size.orientation) == (30, 50, 6)
    # Detectron2's read_image (used by its DatasetMapper) sees the same size.
    assert decode_image(rotated).shape[:2] == (size.height, size.width)


def test_header_only_read_does_not_decode_pixels(tmp_path):
    """A JPEG cut in half still has a valid header: only the deep decode notices."""
    full = write_jpeg(tmp_path / "full.jpg", 400, 300)
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert read_image_size(cut)[:2] == (400, 300)
    with pytest.raises(GrapeInputError, match=r"cut\.jpg.*corrupt or truncated"):
        decode_image(cut)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "image not found"),
        (lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
        (lambda p: p.write_text("not an image"), "not a readable image"),
        (lambda p: p.mkdir(), "not a regular file"),
    ],
)
def test_bad_image_files_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(GrapeInputError, match=message) as err:
        read_image_size(path, source="ann.json")
    assert "bad.jpg" in str(err.value)


def test_pixel_limit_refuses_before_decoding_even_after_labelme_import(tmp_path):
    import labelme  # noqa: F401  (sets PIL.Image.MAX_IMAGE_PIXELS = None process-wide)

    path = write_jpeg(tmp_path / "big.jpg", 200, 100)
    with pytest.raises(GrapeInputError, match=r"20000 pixels, above the limit of 19999"):
        read_image_size(path, max_pixels=19_999)
    with pytest.raises(GrapeInputError, match="above the limit"):
        decode_image(path, max_pixels=19_999)
    assert read_image_size(path, max_pixels=20_000)[:2] == (200, 100)
    assert read_image_size(path, max_pixels=None)[:2] == (200, 100)


@pytest.mark.parametrize(
    "name, message",
    [
        ("../../etc/passwd", "resolves outside"),
        ("../outside.jpg", "resolves outside"),
        ("/etc/passwd", "absolute path"),
        ("C:\\data\\x.jpg", "absolute path"),
        ("\\\\server\\share\\x.jpg", "absolute path"),
        ("~/x.jpg", "absolute path"),
        ("http://example.com/x.jpg", "URL"),
        ("", "empty"),
        ("a\x00b.jpg", "NUL"),
    ],
)
def test_names_leaving_the_allowed_folders_are_refused(tmp_path, name, message):
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(GrapeInputError, match=message) as err:
        resolve_image_path(name, images, source="project.json")
    assert str(err.value).startswith("project.json: ")


def test_relative_names_inside_the_dataset_root_are_allowed(tmp_path):
    root = tmp_path / "dataset"
    (root / "labelme").mkdir(parents=True)
    base = root / "labelme"
    assert resolve_image_path("../images/x.jpg", base, roots=[root]) == root / "images" / "x.jpg"
    assert resolve_image_path("..\\images\\x.jpg", base, roots=[root]) == root / "images/x.jpg"
    assert resolve_image_path("sub/../y.jpg", base) == base / "y.jpg"
    with pytest.raises(GrapeInputError, match="resolves outside"):
        resolve_image_path("../images/x.jpg", base)  # only the JSON's folder allowed
    with pytest.raises(GrapeInputError, match="resolves outside"):
        resolve_image_path("../../x.jpg", base, roots=[root])


def test_list_image_files_sorted_by_name_images_only(tmp_path):
    for name in ["b.JPG", "a.png", "notes.txt", "c.jpeg"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.JPG", "c.jpeg"]
    with pytest.raises(GrapeInputError, match="images folder not found"):
        list_image_files(tmp_path / "missing")
