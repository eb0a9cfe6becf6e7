"""The options that several commands share, declared once, and `settings_options`, which gives a command
--recipe and an option for every training setting (settings.OPTIONS) and hands it one TrainSettings."""

from __future__ import annotations

import functools
import inspect
from typing import Annotated

import typer

from competition.errors import UserError
from competition.kaggle.machines import DEFAULT_ACCELERATOR, GPU_SHAPES
from competition.training.settings import CHOICES, OPTIONS, RECIPES, Choice, Recipe, TrainSettings

DEFAULTS = TrainSettings()
WEIGHTS_HELP = (
    "mean (plain average of the members) or oof (blend weights from greedy selection, fitted fold by fold "
    "on the other folds' out-of-fold rows; kept only if not below the plain mean)."
)
WORKERS_HELP = (
    "Processes training members side by side; 0 = automatic: one per visible GPU; on a CPU with 2 or "
    "more cores, 2 processes sharing the cores for runs that train 40,000 images or more in all (members x epochs x rows), else 1."
)

# Options that several commands share, declared once.
RunArgument = Annotated[
    str | None, typer.Argument(help="Run id in ensembles/ (default: the latest finished run).")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", help="Plain log lines instead of the live progress bar.")
]
WorkersOption = Annotated[int, typer.Option(help=WORKERS_HELP)]
FreshOption = Annotated[
    bool, typer.Option("--fresh", help="Start a new run even if this one was trained or interrupted before.")
]
RecipeOption = Annotated[
    Recipe,
    typer.Option(
        help="default (5 members at 1.5x width); quick: 3 folds at 1x width, in under a third of its time, "
        "0.04 pt below 10 members at 1x on held-out rows; or best: 3 seeds x 40 epochs at 1x with lighter augmentation, sized for "
        "a GPU (docs/training.md). Options given explicitly override the recipe's."
    ),
]
Where = Choice("Where", {"here": "here", "kaggle": "kaggle"})
OnOption = Annotated[
    Where,
    typer.Option(
        "--on",
        help="here (this machine) or kaggle: push the run to a private Kaggle script kernel on Kaggle's GPUs, "
        "follow it, and bring the run home into ensembles/ (needs kaggle.json and the data fetched here).",
    ),
]
AcceleratorOption = Annotated[
    str,
    typer.Option(
        help=f"Kaggle GPU shape with --on kaggle: {DEFAULT_ACCELERATOR} (two T4s, every account's), or where "
        f"your account has them {', '.join(s for s in GPU_SHAPES if s != DEFAULT_ACCELERATOR)}. TPUs are "
        "refused (this model would train on their CPU)."
    ),
]
KernelsOption = Annotated[
    int,
    typer.Option(
        help="With --on kaggle: split the members over this many kernels, run two at a time (Kaggle's "
        "limit of GPU sessions per account); the rest wait here and are pushed as those end."
    ),
]
Weights = Choice("Weights", {"mean": "mean", "oof": "oof"})
WeightsOption = Annotated[Weights, typer.Option(help=WEIGHTS_HELP)]


def _settings(ctx: typer.Context, recipe: str, values: dict) -> TrainSettings:
    """TrainSettings from CLI options over the recipe's; its validation errors become one-line errors."""
    for name, value in RECIPES[recipe].items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):  # not given: the recipe's
            values[name] = value
        elif values[name] != value:  # given: it wins, and is said, as it makes another recipe
            flag = OPTIONS[name].flag.split("/")[0]
            typer.echo(f"note: {flag} {values[name]} instead of --recipe {recipe}'s {value}", err=True)
    try:
        return TrainSettings(**values)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def settings_options(command):
    """Gives `command` --recipe and an option for every setting in settings.OPTIONS, after its own, and
    calls it with the one TrainSettings they make (its `settings` parameter)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
    keyword = inspect.Parameter.KEYWORD_ONLY
    made = [inspect.Parameter("recipe", keyword, default=Recipe.default, annotation=RecipeOption)]
    for name, option in OPTIONS.items():
        default = getattr(DEFAULTS, name)
        kind = CHOICES.get(name) or (bool | None if default is None else type(default))
        declared = typer.Option(*option.flag.split(" "), help=option.help, show_default=default is not None)
        made.append(inspect.Parameter(name, keyword, default=default, annotation=Annotated[kind, declared]))

    @functools.wraps(command)
    def with_settings(ctx: typer.Context, **values):
        settings = {name: values.pop(name) for name in OPTIONS}
        return command(_settings(ctx, values.pop("recipe"), settings), **values)

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    parameters = [context, *made, *(p.replace(kind=keyword) for p in own)]
    with_settings.__signature__ = inspect.Signature(parameters)
    with_settings.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_settings
