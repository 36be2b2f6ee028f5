"""`edgeprune criteria compare`: the oracle study end to end, on the demo architecture at width 8.

The CLI test runs one short study (train half an epoch, one oracle batch, two ratios) and checks
every output the docs and the lead's tooling rely on; the in-process tests pin down what the
study adds to compare_criteria (same figures, criterion options, BN refresh, early refusals).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.models.demo_net import build_demo_net
from edgeprune.studies.oracle import compare_criteria
from edgeprune.studies.study import StudyConfig, StudyData, build_criteria, compare, parse_criterion_spec, refresh_batchnorm
from tests.criteria.toys import image_batches, randomise_bn
from tests.test_cli import assert_clean_error, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ("--model", "tests.nets:tiny_demo", "--train-epochs", "0.5", "--batch-size", "32", "--ratios", "0.3,0.5",
        "--finetune-epochs", "0.05", "--score-batches", "1", "--heldout-batches", "1", "--eval-batches", "2")
REQUESTED = ("l1", "taylor", "taylor-so?hessian=fisher")


@pytest.fixture()
def one_thread(monkeypatch):
    """The CLI subprocess on one thread: on a shared 2-core machine two threads oversubscribe
    (the oracle's many small forward passes ran 20x slower)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_compare_writes_json_plots_and_report(tmp_path, one_thread):
    out = tmp_path / "study"
    proc = run_cli("criteria", "compare", *TINY, "--criteria", ",".join(REQUESTED), "--out", str(out),
                   cache=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "criteria.json").read_text())
    assert {"criteria", "oracle", "model", "data", "command", "versions"} <= set(report)
    assert list(report["criteria"]) == list(REQUESTED)
    for name, entry in report["criteria"].items():
        for key in ("spearman", "kendall"):
            assert -1 <= entry[key] <= 1, (name, key, entry[key])
        assert list(entry["accuracy_at"]) == ["0.3", "0.5"]
        assert list(entry["accuracy_at_finetuned"]) == ["0.3", "0.5"]
        assert all(0 <= a <= 1 for a in [*entry["accuracy_at"].values(), *entry["accuracy_at_finetuned"].values()])
    oracle = report["oracle"]
    assert oracle["channels"] == 8 + 16 + 16 + 32 + 32 == sum(len(v) for v in oracle["delta_loss"].values())
    assert list(oracle["accuracy_at"]) == ["0.3", "0.5"] and math.isfinite(oracle["loss"])
    assert list(oracle["abs_ranking"]["accuracy_at_finetuned"]) == ["0.3", "0.5"]
    assert report["model"]["trained"] and "trained here for 0.5 epochs" in report["model"]["training"]
    assert report["command"].startswith("edgeprune criteria compare") and "taylor-so?hessian=fisher" in report["command"]
    assert report["data"]["oracle_images"] == 32 and not report["data"]["eval_overlaps_oracle"]
    assert "torch" in report["versions"] and "date" in report["versions"]
    # the table on stdout, the plots and the report that embeds them
    assert "Spearman" in proc.stdout and "taylor-so?hessian=fisher" in proc.stdout
    md = (out / "report.md").read_text()
    assert "| `taylor` | global |" in md
    for name in ("accuracy-vs-ratio.png", "scatter-l1.png", "scatter-taylor.png", "scatter-taylor-so-hessian-fisher.png"):
        _assert_png(out / name)
        assert f"]({name})" in md


def test_unknown_criterion_is_a_one_line_error_before_any_work(tmp_path):
    out = tmp_path / "study"
    proc = run_cli("criteria", "compare", "--criteria", "l1,no-such", "--out", str(out), cache=tmp_path, timeout=60)
    assert_clean_error(proc, 2, "unknown criterion 'no-such'; known: ")
    assert not out.exists()  # refused before the (demo) model was even loaded


def test_criterion_specs_and_settings_are_checked():
    assert parse_criterion_spec("taylor-so?hessian=fisher") == ("taylor-so", {"hessian": "fisher"})
    assert parse_criterion_spec("nisp?alpha=0.25") == ("nisp", {"alpha": 0.25})
    assert type(build_criteria(["taylor-so?hessian=fisher"])["taylor-so?hessian=fisher"]).__name__ == "TaylorSecondOrder"
    assert len(build_criteria([])) == 12  # default: every registered criterion
    with pytest.raises(ConfigError, match="hessian"):
        build_criteria(["taylor-so?hessian=nope"])
    with pytest.raises(ConfigError, match="taylor"):
        build_criteria(["taylor?nope=1"])
    with pytest.raises(UnknownNameError):
        build_criteria(["nope"])
    for bad in ((1.0,), (0.3, 0.3), ()):
        with pytest.raises(ConfigError, match="ratio"):
            StudyConfig(out=Path("x"), ratios=bad).validate()


def test_study_figures_equal_compare_criteria():
    """Without fine-tuning and with the oracle's batches as evaluation data, the study's
    correlations and accuracies are exactly compare_criteria's."""
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4))
    held = image_batches(2, 6, (1, 32, 32), 10, seed=1)
    score = image_batches(1, 6, (1, 32, 32), 10, seed=2)
    example = held[0][0][:1]
    ours, scores, _ = compare(net, example, build_criteria(["l1", "taylor"]), StudyData(score, held, held, True),
                              [0.0, 0.3], None)
    reference = compare_criteria(net, example, score, held, ["l1", "taylor"], [0.0, 0.3])
    assert ours["oracle"]["accuracy_at"] == reference["oracle"]["accuracy_at"]
    for name in ("l1", "taylor"):
        for key in ("spearman", "kendall", "spearman_within_groups", "accuracy_at"):
            assert ours["criteria"][name][key] == pytest.approx(reference["criteria"][name][key]), (name, key)
        assert ours["criteria"][name]["accuracy_at_finetuned"] is None
        assert set(scores[name]) == set(ours["oracle"]["groups"])


def test_refresh_batchnorm_sets_statistics_of_the_batches_and_keeps_momentum():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3)).eval()
    batches = image_batches(2, 8, (1, 4, 4), 10, seed=3)
    refresh_batchnorm(net, batches)
    with torch.no_grad():
        features = torch.cat([net[0](x) for x, _ in batches])
    # the cumulative average of the two batches' means is the mean over both (equal sizes)
    assert torch.allclose(net[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert net[1].momentum == 0.1 and not net.training
