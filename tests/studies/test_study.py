"""``run_study`` (``edgeprune criteria compare``): the oracle study end to end, in process.

Two short studies run end to end: the demo architecture at width 8 on digits (train half an
epoch, one oracle batch, two ratios), and a small colour net on an ImageFolder with a separate
validation folder, ``--input-shape`` and ``--weights`` (the options every command shares). The
rest pins down the measurements (:func:`compare` against independent computations) and the
refusals that must come before any slow work.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console
from scipy.stats import spearmanr

from edgeprune.data import Preprocessing
from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.models.demo_net import build_demo_net
from edgeprune.models.loading import DataOptions, ModelOptions
from edgeprune.studies.accuracy import accuracy, prune_to_ratio
from edgeprune.studies.compare import StudyData, build_criteria, compare, parse_criterion_spec
from edgeprune.studies.study import StudyBatches, StudyConfig, StudyTraining, run_study
from edgeprune.studies.tables import rich_table
from tests.criteria.toys import image_batches, randomise_bn
from tests.studies.nets import small_rgb

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REQUESTED = ("l1", "taylor", "taylor-so?hessian=fisher")


@pytest.fixture()
def one_thread():
    """One torch thread: on a shared 2-core machine two threads oversubscribe (the oracle's many
    small forward passes ran 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def _assert_outputs(out: Path, report: dict, criteria: tuple[str, ...], ratios: list[str]) -> None:
    """criteria.json is what run_study returned; report.md embeds every plot, which are PNGs."""
    assert json.loads((out / "criteria.json").read_text()) == json.loads(json.dumps(report))
    assert {"criteria", "oracle", "model", "data", "command", "versions"} <= set(report)
    assert list(report["criteria"]) == list(criteria)
    for name, entry in report["criteria"].items():
        for key in ("spearman", "kendall"):
            assert -1 <= entry[key] <= 1, (name, key, entry[key])
        assert list(entry["accuracy_at"]) == ratios and list(entry["accuracy_at_finetuned"]) == ratios
        assert all(0 <= a <= 1 for a in [*entry["accuracy_at"].values(), *entry["accuracy_at_finetuned"].values()])
    oracle = report["oracle"]
    assert list(oracle["accuracy_at"]) == ratios and math.isfinite(oracle["loss"])
    assert list(oracle["abs_ranking"]["accuracy_at_finetuned"]) == ratios
    assert "torch" in report["versions"] and "date" in report["versions"] and "scipy" in report["versions"]
    md = (out / "report.md").read_text()
    for name in ["accuracy-vs-ratio.png"] + [f"scatter-{c.replace('?', '-').replace('=', '-')}.png" for c in criteria]:
        _assert_png(out / name)
        assert f"]({name})" in md


def test_study_on_digits_writes_json_plots_and_report(tmp_path, one_thread):
    out = tmp_path / "study"
    config = StudyConfig(out=out, model=ModelOptions("tests.nets:tiny_demo"), criteria=REQUESTED, ratios=(0.3, 0.5),
                         batches=StudyBatches(size=32, score=1, heldout=1, evaluation=2),
                         training=StudyTraining(finetune_epochs=0.05, train_epochs=0.5), cache_dir=tmp_path)
    report = run_study(config)
    _assert_outputs(out, report, REQUESTED, ["0.3", "0.5"])
    oracle = report["oracle"]
    assert oracle["channels"] == 8 + 16 + 16 + 32 + 32 == sum(len(v) for v in oracle["delta_loss"].values())
    assert report["model"]["trained"] and "trained here for 0.5 epochs" in report["model"]["training"]
    assert report["command"].startswith("edgeprune criteria compare --model tests.nets:tiny_demo --data digits")
    assert "taylor-so?hessian=fisher" in report["command"]
    assert report["data"]["oracle_images"] == 32 and report["data"]["eval_images"] == 64
    assert not report["data"]["eval_overlaps_oracle"]
    assert "| `taylor` | global |" in (out / "report.md").read_text()
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(rich_table(report))
    text = console.export_text()
    assert "Spearman" in text and "taylor-so?hessian=fisher" in text and "oracle, |ΔL| ranking" in text


def make_image_folder(root: Path, per_class: int, seed: int) -> Path:
    """Two classes of 28x28 colour images, reddish and bluish, so the classes are learnable."""
    g = torch.Generator().manual_seed(seed)
    for label, channel in (("blue", 2), ("red", 0)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(28, 28, 3, generator=g) * 96).to(torch.uint8)
            pixels[..., channel] += 128
            Image.fromarray(pixels.numpy()).save(root / label / f"{i}.png")
    return root


def test_study_on_an_image_folder_with_val_folder_input_shape_and_weights(tmp_path, one_thread):
    train_dir = make_image_folder(tmp_path / "train", 8, seed=1)
    val_dir = make_image_folder(tmp_path / "val", 6, seed=2)
    weights = tmp_path / "w.pt"
    torch.save(small_rgb().state_dict(), weights)
    out = tmp_path / "study"
    model = ModelOptions("tests.studies.nets:small_rgb", weights=weights, input_shape=(1, 3, 28, 28))
    data = DataOptions(f"imagefolder:{train_dir}", f"imagefolder:{val_dir}")
    config = StudyConfig(out=out, model=model, data=data, criteria=("l1", "taylor"), ratios=(0.0, 0.5),
                         batches=StudyBatches(size=4, score=1, heldout=1),
                         training=StudyTraining(finetune_epochs=0.5), cache_dir=tmp_path)
    report = run_study(config)
    _assert_outputs(out, report, ("l1", "taylor"), ["0", "0.5"])
    assert report["oracle"]["groups"] == {"features.0": 6, "features.3": 8}
    assert report["model"] == {**report["model"], "spec": "tests.studies.nets:small_rgb", "weights": str(weights),
                               "trained": True, "training": f"weights from {weights}"}
    assert report["data"]["spec"] == f"imagefolder:{train_dir}"
    # the oracle's batch and the evaluation come from the validation folder, never overlapping
    assert report["data"]["oracle_images"] == 4 and report["data"]["eval_images"] == 12 - 4
    assert report["data"]["score_images"] == 4 and not report["data"]["eval_overlaps_oracle"]
    for flag in ("--weights", str(weights), "--input-shape 1x3x28x28", f"--val-data imagefolder:{val_dir}"):
        assert flag in report["command"], flag
    # ratio 0 is the unpruned net: its accuracy is the oracle's unpruned accuracy
    assert report["criteria"]["l1"]["accuracy_at"]["0"] == report["oracle"]["accuracy"]


def test_an_input_shape_that_does_not_match_the_images_is_refused(tmp_path):
    train_dir = make_image_folder(tmp_path / "train", 2, seed=1)
    config = StudyConfig(out=tmp_path / "study", model=ModelOptions("tests.studies.nets:small_rgb",
                                                                    input_shape=(1, 3, 32, 32)),
                         data=DataOptions(f"imagefolder:{train_dir}"), criteria=("l1",))
    with pytest.raises(ConfigError, match="--resize"):
        run_study(config)
    resized = DataOptions(f"imagefolder:{train_dir}", preprocessing=Preprocessing(resize=(32, 32)))
    assert "--resize 32x32" in StudyConfig(out=Path("x"), data=resized).as_command()


def test_unknown_criterion_is_refused_before_any_work(tmp_path):
    out = tmp_path / "study"
    with pytest.raises(UnknownNameError, match="unknown criterion 'no-such'; known: "):
        run_study(StudyConfig(out=out, criteria=("l1", "no-such"), cache_dir=tmp_path))
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
    with pytest.raises(ConfigError, match="twice"):
        build_criteria(["l1", "l1"])
    with pytest.raises(UnknownNameError):
        build_criteria(["nope"])
    for bad in ((1.0,), (0.3, 0.3), ()):
        with pytest.raises(ConfigError, match="ratio"):
            StudyConfig(out=Path("x"), ratios=bad)
    with pytest.raises(ConfigError, match="score-on"):
        StudyBatches(score_on="test")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch-size"):
        StudyBatches(size=0)
    with pytest.raises(ConfigError, match="lr"):
        StudyTraining(lr=0)
    with pytest.raises(ConfigError, match="weights"):
        StudyConfig(out=Path("x"), model=ModelOptions("demo", weights=Path("w.pt")))


def test_compare_figures_follow_their_definitions():
    """Pooled Spearman against |ΔL| over every channel, and accuracy after pruning by the scores
    — recomputed here independently; the model passed in is left untouched."""
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4)).eval()
    before = copy.deepcopy(net.state_dict())
    held = image_batches(2, 6, (1, 32, 32), 10, seed=1)
    score = image_batches(1, 6, (1, 32, 32), 10, seed=2)
    example = held[0][0][:1]
    report, scores, oracle = compare(net, example, build_criteria(["l1", "taylor"]),
                                     StudyData(score, held, held, True), [0.0, 0.3])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    order = list(oracle)
    assert report["oracle"]["groups"] == {g: len(oracle[g]) for g in order}
    signed = {g: oracle[g].float() for g in order}
    assert report["oracle"]["accuracy_at"]["0.3"] == accuracy(prune_to_ratio(net, example, signed, "global", 0.3), held)
    for name in ("l1", "taylor"):
        entry = report["criteria"][name]
        expected = spearmanr(torch.cat([scores[name][g] for g in order]).numpy(),
                             torch.cat([oracle[g].abs() for g in order]).numpy()).statistic
        assert entry["spearman"] == pytest.approx(expected)
        assert entry["accuracy_at"]["0"] == pytest.approx(accuracy(net, held))
        pruned = prune_to_ratio(net, example, scores[name], entry["scope"], 0.3)
        assert entry["accuracy_at"]["0.3"] == accuracy(pruned, held)
        assert entry["accuracy_at_finetuned"] is None
    with pytest.raises(ValueError, match="ratios"):
        compare(net, example, build_criteria(["l1"]), StudyData(score, held, held, True), [1.0])
