"""``edgeprune criteria compare`` through the CLI, with the model and data options every command
shares: a user's own factory, weights, an ImageFolder with a separate validation folder and an
explicit input shape."""

from __future__ import annotations

import json

import torch

from tests.studies.nets import small_rgb
from tests.studies.test_study import make_image_folder
from tests.test_cli import assert_clean_error, run_cli


def test_compare_takes_the_shared_model_and_data_options(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: two threads oversubscribe
    train_dir = make_image_folder(tmp_path / "train", 8, seed=1)
    val_dir = make_image_folder(tmp_path / "val", 6, seed=2)
    weights = tmp_path / "w.pt"
    torch.save(small_rgb().state_dict(), weights)
    out = tmp_path / "study"
    proc = run_cli("criteria", "compare", "--model", "tests.studies.nets:small_rgb", "--weights", str(weights),
                   "--input-shape", "1x3x28x28", "--data", f"imagefolder:{train_dir}",
                   "--val-data", f"imagefolder:{val_dir}", "--criteria", "l1,taylor", "--ratios", "0.5",
                   "--batch-size", "4", "--score-batches", "1", "--heldout-batches", "1", "--finetune-epochs", "0.5",
                   "--out", str(out), cache=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "criteria.json").read_text())
    assert list(report["criteria"]) == ["l1", "taylor"] and report["oracle"]["channels"] == 6 + 8
    assert report["model"]["training"] == f"weights from {weights}"
    assert report["data"]["oracle_images"] + report["data"]["eval_images"] == 12  # the validation folder
    assert "Spearman" in proc.stdout and (out / "report.md").is_file()


def test_unknown_criterion_is_a_one_line_error_before_any_work(tmp_path):
    out = tmp_path / "study"
    proc = run_cli("criteria", "compare", "--criteria", "l1,no-such", "--out", str(out), cache=tmp_path, timeout=60)
    assert_clean_error(proc, 2, "unknown criterion 'no-such'; known: ")
    assert not out.exists()  # refused before the (demo) model was even loaded
