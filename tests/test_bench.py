"""`resnet-builder bench` runs and reports every field (timings are not asserted)."""

import json

from click.testing import CliRunner

from resnet_builder.cli import main
from resnet_builder.runtime import onednn_in_force

FIELDS = {
    "train_images_per_second", "baseline_fit_images_per_second", "train_vs_fit",
    "predict_images_per_second", "baseline_predict_images_per_second",
    "predict_vs_keras_predict", "macs_per_image", "train_gflops", "matmul_gflops",
    "fraction_of_matmul", "pipeline_digits_images_per_second",
    "pipeline_folder_images_per_second", "trainer_loop_images_per_second", "loop_vs_step",
    "pipeline_jpeg_images_per_second", "baseline_tfdata_images_per_second",
    "baseline_keras_directory_images_per_second", "pipeline_jpeg_vs_tfdata",
}


def test_bench_json_has_every_field():
    result = CliRunner().invoke(main, ["bench", "--depth", "8", "--block-type", "basic",
                                       "--batch-size", "8", "--input-shape", "16,16,3",
                                       "--steps", "2", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert set(report) >= FIELDS
    assert all(report[k] > 0 for k in FIELDS)
    assert report["mixed_precision"] == "off" and report["loop_steps_per_call"] == 1  # a CPU
    assert report["onednn"] is onednn_in_force()
    expected = 6 * report["macs_per_image"] * report["train_images_per_second"] / 1e9
    assert abs(report["train_gflops"] - expected) <= 0.01 + 1e-3 * expected
    ratio = report["pipeline_jpeg_images_per_second"] / report["baseline_tfdata_images_per_second"]
    assert abs(report["pipeline_jpeg_vs_tfdata"] - ratio) <= 0.01 * ratio


def test_bench_mixed_precision_applies_to_every_training_number():
    result = CliRunner().invoke(main, ["bench", "--depth", "8", "--block-type", "basic",
                                       "--batch-size", "8", "--input-shape", "16,16,3",
                                       "--steps", "2", "--warmup", "1", "--no-pipelines",
                                       "--mixed-precision", "bfloat16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["mixed_precision"] == "bfloat16"
    assert report["trainer_loop_images_per_second"] > 0 and report["train_vs_fit"] > 0


def test_bench_times_the_model_its_flags_ask_for(monkeypatch):
    """--num-classes, --head and --dropout reach every measurement (the step, fit, the loop
    and predict used to build a plain head with the batch's label count or 10 classes)."""
    from resnet_builder.benchmark.loop import BenchModel
    from resnet_builder.model.architecture import resolve_architecture
    from resnet_builder.model.summary import model_summary

    built = []
    build = BenchModel.build
    monkeypatch.setattr(BenchModel, "build", lambda net: built.append(build(net)) or built[-1])
    result = CliRunner().invoke(main, ["bench", "--depth", "8", "--block-type", "basic",
                                       "--batch-size", "8", "--input-shape", "16,16,3",
                                       "--num-classes", "20", "--head", "tutorial",
                                       "--dropout", "0.3", "--steps", "2", "--warmup", "1",
                                       "--no-pipelines", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["num_classes"], report["head"]) == (20, "tutorial")
    arch = resolve_architecture(8, block_type="basic", input_shape=(16, 16, 3))
    assert report["macs_per_image"] == model_summary(arch, 20, "tutorial")["macs_per_image"]
    assert len(built) == 4  # step, fit, loop, predict
    for model in built:
        assert model.output_shape == (None, 20)
        assert model.get_layer("dropout").rate == 0.3


def test_bench_refuses_one_class_by_its_flag():
    result = CliRunner().invoke(main, ["bench", "--depth", "8", "--num-classes", "1"])
    assert result.exit_code == 2 and "--num-classes" in result.output
    assert "at least 2" in result.output and "data.synthetic_classes" not in result.output
