"""The Makefile's converter targets on user data: no synthetic defaults leak into them."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> str:
    """What `make -n` would run; the install stamp is treated as done (-o)."""
    proc = subprocess.run(["make", "-n", "-o", ".venv/.installed", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return proc.stdout


def test_convert_via_on_user_data_uses_only_the_users_files():
    out = dry_run("convert-via", "VIA=my/project.json", "IMAGES=my/imgs", "OUT=my/out.json")
    assert "--group-attr" not in out
    assert "make_synthetic" not in out
    assert '--via "my/project.json" --images "my/imgs" --out "my/out.json"' in out


def test_convert_via_without_variables_converts_the_synthetic_project():
    out = dry_run("convert-via")
    assert "--group-attr instance" in out
    assert "via_project_train.json" in out


def test_convert_labelme_on_user_data_takes_its_folder_as_root():
    out = dry_run("convert-labelme", "INPUT=my/labelme")
    assert '--input "my/labelme" --root "my/labelme"' in out
    assert "grapes_synth" not in out


def test_real_target_runs_the_real_tool_on_the_shared_photos():
    out = dry_run("real")
    assert "tools/real.py" in out and "real-data/wgisd-train" in out


@pytest.mark.slow
def test_auto_annotate_sample_comes_from_make_synthetic(tmp_path):
    """`make auto-annotate` without IMAGES= renders its sample with a make_synthetic.py flag
    (no inline Python); run as the Makefile runs it, it writes the 8 one-bunch images the
    edge annotator is measured on (those of write_sample_images, byte for byte)."""
    from grape_instances.synthetic.export import write_sample_images
    from tests.helpers import assert_user_error, run_tool

    sample = tmp_path / "sample"
    lines = dry_run("auto-annotate", f"EDGES_SAMPLE={sample}").replace("\\\n", " ").splitlines()
    assert not [ln for ln in lines if " -c " in ln]
    render = [ln for ln in lines if "tools/make_synthetic.py --edges-sample" in ln]
    assert len(render) == 1
    subprocess.run(render[0], shell=True, cwd=ROOT, check=True, capture_output=True)
    expected = write_sample_images(tmp_path / "expected", n=8, background="black")
    written = sorted((sample / "images").iterdir())
    assert [p.name for p in written] == [p.name for p in expected]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(written, expected, strict=True))
    assert_user_error(run_tool("make_synthetic.py", "--edges-sample", "--count", "0",
                               "--out", str(tmp_path / "none")), "--count")


def test_pretrain_ablation_compares_against_the_real_targets_run():
    out = dry_run("pretrain-ablation", "REAL_OUT=out/scratch")
    assert "tools/pretrain_ablation.py" in out and "real-data/wgisd-train" in out
    assert '--scratch-dir "out/scratch"' in out
