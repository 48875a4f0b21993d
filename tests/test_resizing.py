"""The one resize rule (data.resize: stretch | crop | pad), stored in the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_builder.data.resizing import (
    PAD_VALUE,
    Resize,
    decode_jpeg_for,
    fit_array,
    fit_image,
)
from resnet_builder.errors import ArgumentError
from resnet_builder.model.classifier import build_model


def _fit(image: np.ndarray, how: Resize) -> np.ndarray:
    return fit_image(tf.constant(image), how).numpy()


def _stripes(height: int, width: int) -> np.ndarray:
    """Columns numbered by their x position, so a crop shows which columns it kept."""
    row = np.linspace(0, 255, width).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2)


def test_stretch_keeps_everything_and_the_same_size_is_untouched():
    image = _stripes(20, 40)
    out = _fit(image, Resize(10))
    assert out.shape == (10, 10, 3)
    assert out[:, 0].max() < 20 and out[:, -1].min() > 235  # both ends kept
    same = _stripes(10, 10)
    np.testing.assert_array_equal(_fit(same, Resize(10)), same)


def test_crop_takes_the_centre_square_of_crop_pct_of_the_shorter_side():
    image = _stripes(100, 200)
    out = _fit(image, Resize(50, "crop", 1.0))  # the centre 100x100: columns 50..149
    assert out.shape == (50, 50, 3)
    assert abs(int(out[0, 0, 0]) - image[0, 50, 0]) <= 2
    assert abs(int(out[0, -1, 0]) - image[0, 149, 0]) <= 2
    tighter = _fit(image, Resize(50, "crop", 0.5))  # the centre 50x50: columns 75..124
    assert abs(int(tighter[0, 0, 0]) - image[0, 75, 0]) <= 2
    assert abs(int(tighter[0, -1, 0]) - image[0, 124, 0]) <= 2


def test_pad_fits_the_longer_side_and_fills_with_grey():
    image = np.full((20, 40, 3), 10, np.uint8)
    out = _fit(image, Resize(16, "pad"))
    assert out.shape == (16, 16, 3)
    assert (out[4:12] == 10).all()  # the image: 8 rows in the middle
    assert (out[:4] == PAD_VALUE).all() and (out[12:] == PAD_VALUE).all()
    gray = _fit(np.full((30, 10, 1), 200, np.uint8), Resize(9, "pad"))
    assert (gray[:, 3:6] == 200).all() and (gray[:, :3] == PAD_VALUE).all()


def test_big_shrinks_are_box_filtered_not_aliased():
    """A one-pixel checkerboard shrunk 8x averages to grey (plain bilinear would alias)."""
    board = ((np.indices((128, 128)).sum(0) % 2) * 255).astype(np.uint8)[..., None]
    out = _fit(board, Resize(16))
    assert np.abs(out.astype(int) - 128).max() <= 2


def _jpeg(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_stripes(height, width)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize(("shape", "how", "decoded"), [
    ((300, 400), Resize(64), (75, 100)),  # 300/64 = 4.7 -> 1/4 scale
    ((300, 400), Resize(200), (300, 400)),  # less than twice: full size
    ((300, 400), Resize(100, "crop", 0.5), (300, 400)),  # keeps 150 rows for 100: 1.5x
    ((300, 400), Resize(50, "crop", 0.5), (150, 200)),  # keeps 150 rows for 50: 3x -> 1/2
    ((64, 2000), Resize(32, "pad"), (8, 250)),  # longer side 2000/32 -> 1/8
])
def test_jpegs_are_dct_scaled_only_as_far_as_the_output_allows(shape, how, decoded):
    image = decode_jpeg_for(tf.constant(_jpeg(*shape)), how).numpy()
    assert image.shape[:2] == decoded


def test_fit_array_equals_fit_image():
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 20, 3), np.uint8)
    how = Resize(8, "crop")
    np.testing.assert_array_equal(fit_array(images, how),
                                  np.stack([_fit(image, how) for image in images]))


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="resize mode"):
        Resize(8, "squash")
    with pytest.raises(ValueError, match="crop_pct"):
        Resize(8, "crop", 0.0)
    with pytest.raises(ArgumentError, match="resize"):
        build_model(8, num_classes=2, input_shape=(8, 8, 1), resize="squash")


def test_the_model_stores_its_resize_rule():
    model = build_model(8, num_classes=2, input_shape=(8, 8, 1), resize="crop", crop_pct=0.9)
    config = model.get_config()
    assert (config["resize"], config["crop_pct"]) == ("crop", 0.9)
    again = type(model).from_config(config)
    assert (again.resize, again.crop_pct) == ("crop", 0.9)


def test_a_run_trains_with_its_resize_rule_and_predict_uses_it(tmp_path, monkeypatch):
    """data.resize reaches the saved model; predict prepares files by the same rule."""
    import resnet_builder
    from resnet_builder.data.batch_decode import decode_or_skip
    from resnet_builder.data.decode import SkipLog
    from resnet_builder.inference import predict as predicting

    for i in range(12):
        folder = tmp_path / "data" / ("wide" if i % 2 else "tall")
        folder.mkdir(parents=True, exist_ok=True)
        shape = (12, 30) if i % 2 else (30, 12)
        Image.fromarray(np.full((*shape, 3), 40 + 15 * i, np.uint8)).save(folder / f"{i}.png")
    result = resnet_builder.train(None, overrides=[
        "data.source=folder", f"data.path={tmp_path / 'data'}", "data.image_size=8",
        "data.resize=pad", "data.validation_split=0.25", "data.batch_size=4",
        "model.depth=8", "model.block_type=basic", "train.epochs=1", "run.progress=none",
        "run.plots=false", "run.loggers=[csv]", f"run.project={tmp_path / 'runs'}"])
    import keras

    model = keras.models.load_model(result.run_dir / "best.keras")
    assert (model.resize, model.crop_pct) == ("pad", 0.875)
    files = sorted((tmp_path / "data").rglob("*.png"))
    rules = []
    decoded = predicting.decoded_batches
    monkeypatch.setattr(predicting, "decoded_batches",
                        lambda files, how, *rest: rules.append(how) or decoded(files, how, *rest))
    predictions = resnet_builder.predict(result.run_dir, files)
    assert len(predictions) == len(files)
    assert rules == [Resize(8, "pad")]  # the rule predict decoded every file by
    elements = tf.data.Dataset.from_tensor_slices(
        (np.arange(2, dtype=np.int64), [str(f) for f in files[:2]], np.zeros(2, np.int32)))
    padded, _ = next(iter(decode_or_skip(elements, Resize(8, "pad"), 3, SkipLog(),
                                         from_files=True).batch(2)))
    assert (padded.numpy()[:, 0] == PAD_VALUE).all() or (padded.numpy()[:, :, 0] == PAD_VALUE).all()
