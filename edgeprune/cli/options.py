"""CLI options defined once: the model/data set every model-taking command shares, and the
other options several commands repeat (target, threads, seed, output).

:func:`model_data_options` adds ``--model --weights --trust-checkpoint --input-shape --data
--val-data --resize --mean --std --grayscale`` to a command and hands it one parsed
:class:`ModelDataOptions` argument, so the commands cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from edgeprune.data import Preprocessing
from edgeprune.models.loading import DataOptions, ModelOptions, parse_floats, parse_shape, parse_size


@dataclass(frozen=True)
class ModelDataOptions:
    model: ModelOptions
    data: DataOptions


_SHARED: dict[str, tuple[object, object]] = {  # name -> (annotation, default typer.Option)
    "model": (str, typer.Option("demo", help="demo | torchvision:NAME?k=v | FILE.pt2 | module:factory")),
    "weights": (Optional[Path], typer.Option(None, help="State dict for the model (weights_only load).")),
    "trust_checkpoint": (bool, typer.Option(False, help="Allow a pickled checkpoint (runs its code!).")),
    "input_shape": (Optional[str], typer.Option(None, help="NxCxHxW, e.g. 1x3x32x32 (default: one sample of the data).")),
    "data": (str, typer.Option("digits", help="digits | imagefolder:PATH")),
    "val_data": (Optional[str], typer.Option(None, help="imagefolder:PATH for validation (else an 80/20 split).")),
    "resize": (Optional[str], typer.Option(None, help="HxW to resize images to.")),
    "mean": (Optional[str], typer.Option(None, help="Normalisation mean, comma-separated.")),
    "std": (Optional[str], typer.Option(None, help="Normalisation std, comma-separated.")),
    "grayscale": (bool, typer.Option(False, help="Convert imagefolder images to one channel.")),
    "rgb": (bool, typer.Option(False, help="Feed single-channel data (digits) as 3 identical channels (RGB models).")),
}


def parse_model_data(values: dict[str, object]) -> ModelDataOptions:
    """The shared options' raw CLI values -> typed, validated options (ConfigError on bad input)."""
    shape = values["input_shape"]
    model = ModelOptions(model=str(values["model"]), weights=values["weights"],  # type: ignore[arg-type]
                         trust_checkpoint=bool(values["trust_checkpoint"]),
                         input_shape=parse_shape(str(shape)) if shape else None)
    prep = Preprocessing(resize=parse_size(values["resize"]),  # type: ignore[arg-type]
                         mean=parse_floats(values["mean"], "--mean"),  # type: ignore[arg-type]
                         std=parse_floats(values["std"], "--std"),  # type: ignore[arg-type]
                         grayscale=bool(values["grayscale"]), rgb=bool(values["rgb"]))
    return ModelDataOptions(model, DataOptions(str(values["data"]), values["val_data"], prep))  # type: ignore[arg-type]


def model_data_options(fn: Callable) -> Callable:
    """Give ``fn`` the shared options; it receives them parsed as ``inputs: ModelDataOptions``."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "inputs"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
              for name, (annotation, default) in _SHARED.items()]

    @functools.wraps(fn)
    def wrapper(**kwargs: object) -> object:
        values = {name: kwargs.pop(name) for name in _SHARED}
        return fn(inputs=parse_model_data(values), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "inputs"},
                               **{name: annotation for name, (annotation, _) in _SHARED.items()}}
    return wrapper


Target = Annotated[str, typer.Option(help="Target name (see `edgeprune targets`) or a YAML file.")]
Threads = Annotated[Optional[int], typer.Option(help="Threads for every runtime (default: all cores).")]
Seed = Annotated[int, typer.Option(help="Random seed (data order, initialisation).")]
Lr = Annotated[float, typer.Option(help="Fine-tune learning rate (SGD, cosine).")]


def choices(names: list[str]) -> str:
    """``a | b | c`` for help texts built from a registry."""
    return " | ".join(names)
