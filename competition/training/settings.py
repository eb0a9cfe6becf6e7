"""The one frozen record of how a run is trained. Saved as `config.json` in every run's folder."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass


class Choice(enum.StrEnum):
    """A fixed choice: Typer lists the values in --help and refuses others before anything is loaded."""


Arch = Choice("Arch", {name: name for name in ("bncnn", "lenet", "mlp")})
Backend = Choice("Backend", {name: name for name in ("tensorflow", "jax")})
Precision = Choice("Precision", {name: name for name in ("auto", "float32", "mixed", "bfloat16")})
Schedule = Choice("Schedule", {name: name for name in ("exponential", "plateau", "cosine")})
ARCHS = tuple(a.value for a in Arch)
BACKENDS = tuple(b.value for b in Backend)
PRECISIONS = tuple(p.value for p in Precision)
SCHEDULES = tuple(s.value for s in Schedule)
RECIPE_BATCH_SIZE = 64
RECIPE_LEARNING_RATE = 1e-3  # the 2018 recipe's Adam rate, for its exponential (and the plateau) schedule
# The cosine schedule's peak at batch 64: it spends only its first epochs near the peak, so it can
# start higher. 2e-3 and 3e-3 beat 1e-3 at 15 epochs on fold 0 (benchmarks/README.md, "Findings").
COSINE_LEARNING_RATE = 2e-3
GPU_BATCH_SIZE = 256


@dataclass(frozen=True)
class TrainSettings:
    arch: str = "bncnn"  # the public 0.99757 recipe; `lenet`/`mlp` for comparison
    # Channels of every convolution (units of the mlp) times this: what a member's cost is bought with
    # (multiply-adds grow as its square). 1 = the network as published.
    width: float = 1.5
    folds: int = 5  # stratified k-fold: every training row gets one out-of-fold prediction
    # The default recipe, chosen from the measured accuracy-time frontier (benchmarks/frontier.md): the
    # most accurate recipe that trains in at most the wall time of the one before it (10 members at 1x
    # width, `--seeds 2 --width 1`) on a 2-core CPU: 5 members at 1.5x, 20 epochs (README "Results").
    # The 2018 recipe was 3 seeds x 45 epochs with the exponential schedule (`--seeds 3 --epochs 45
    # --schedule exponential --width 1`), hours on a CPU.
    seeds: int = 1  # models per fold: each out-of-fold row is predicted by this many members
    epochs: int = 20
    # 0 = auto: the recipe's 64 on CPU (small batches regularise this small net well); 256 on a GPU,
    # where 64 leaves the device mostly idle. See `resolved`.
    batch_size: int = 0
    # 0 = auto: Adam's 1e-3 (the 2018 recipe's) at batch 64, or COSINE_LEARNING_RATE for the cosine
    # schedule's peak, scaled by sqrt(batch / 64) for other batch sizes (the square-root rule keeps the
    # gradient noise per step about the same for Adam).
    learning_rate: float = 0.0
    lr_decay: float = 0.95  # per epoch, for the exponential schedule
    # exponential: the recipe's lr x lr_decay^epoch; plateau: ReduceLROnPlateau on validation loss;
    # cosine: linear warmup to the rate over warmup_epochs, then a cosine decay to zero at the last step
    # (a modern short-training schedule: no rate left over at the end, so fewer epochs are wasted).
    schedule: str = "cosine"
    # cosine only: a few hundred steps keep Adam's first updates small; at most epochs - 1 (resolved).
    warmup_epochs: int = 1
    early_stopping: int = 0  # patience in epochs on validation accuracy, 0 = off (keeps CV honest)
    augment: bool = True  # rotation/zoom/shift: worth ~0.1-0.2% on this data
    # The 2018 recipe's ranges. Half of them (5, 0.05, 0.05) and 1.5 times (15, 0.15, 0.15) were measured
    # against held-out rows (benchmarks/README.md, "Findings").
    rotation_degrees: float = 10.0  # more turns 1s into 7s
    zoom: float = 0.1
    shift: float = 0.1  # fraction of the 28-pixel side
    dropout_rate: float = 0.4
    split_seed: int = 42  # fixes the folds; the same for every member so OOF rows never overlap
    seed: int = 0  # base of every member's seed
    subset: int = 0  # train on the first N rows only (0 = all), for quick looks
    # Labelled rows of train.csv kept out of all training and every choice, and predicted in place of
    # test.csv: the submission's own predictor scored on known labels (`--holdout N`), the measure for
    # any decision about the submission (CV is scored by fewer members, and chose the recipe). A
    # stratified draw of N rows seeded by holdout_seed, made before --subset; 0 = off, a real run.
    holdout: int = 0
    holdout_seed: int = 0
    backend: str = "tensorflow"  # Keras backend; Kaggle notebooks ship TensorFlow
    # auto: mixed float16 on a GPU; mixed bfloat16 on a CPU that computes it natively (AVX512_BF16 or AMX:
    # faster at the same accuracy, benchmarks/README.md); float32 elsewhere.
    precision: str = "auto"
    # Score the validation fold after every epoch (learning curves; needed by the plateau schedule and
    # early stopping, which then turn it on). None = auto: on a GPU, where it is cheap; not on a CPU,
    # where it is a large share of each epoch (benchmarks/README.md). The fold
    # is always scored once at the end, for the CV.
    epoch_validation: bool | None = None
    # After a member's last epoch, replace its batch-norm moving averages (statistics of weights that
    # kept changing) by the exact statistics of its final weights over its training rows (precise_bn.py):
    # a short run then predicts as well as its weights allow; a full run neither gains nor loses.
    precise_bn: bool = True
    # CPU threads per training process, filled in by `train` from the cores and the run's size (see
    # worker.cpu_workers); part of the run's identity because the thread count changes the last bits of
    # the numbers, so every member of a run, resumed or not, trains with the same one. 0 = automatic.
    cpu_threads: int = 0
    # Training processes side by side on a CPU, filled in with cpu_threads (worker.cpu_workers). When
    # they do not divide the members, the last round's members get the idle workers' threads too
    # (`member_threads`): planned from the whole run, so a resumed run gives every member the threads
    # it had. 0 = automatic; a run saved before this setting planned none (INTRODUCED: 1).
    cpu_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("arch", "backend", "precision", "schedule"):
            value = getattr(self, name)
            if isinstance(value, enum.Enum):  # from the CLI: store the plain string in config.json
                object.__setattr__(self, name, value.value)
        problems = []
        if self.folds < 2:
            problems.append("--folds must be at least 2")
        if self.seeds < 1 or self.epochs < 1:
            problems.append("--seeds and --epochs must be positive")
        if self.batch_size < 0 or self.learning_rate < 0:
            problems.append("--batch-size and --lr must be positive (or 0 for automatic)")
        if not 0.0 <= self.dropout_rate < 1.0:
            problems.append("--dropout must be at least 0 and below 1")
        if not 0.0 < self.width <= 8.0:
            problems.append("--width must be above 0 and at most 8")
        if self.rotation_degrees < 0 or not (0.0 <= self.zoom < 1.0 and 0.0 <= self.shift < 1.0):
            problems.append("--rotation must be 0 or more, --zoom and --shift at least 0 and below 1")
        if self.warmup_epochs < 0:
            problems.append("--warmup-epochs must be 0 or more")
        if self.cpu_threads < 0 or self.cpu_workers < 0:
            problems.append("cpu_threads and cpu_workers must be 0 (automatic) or positive")
        if self.early_stopping < 0:
            problems.append("--early-stopping must be 0 (off) or a positive number of epochs")
        if self.subset < 0:
            problems.append("--subset must be 0 (all rows) or a positive number of rows")
        if self.holdout < 0:
            problems.append("--holdout must be 0 (off) or a positive number of rows")
        for name, value, allowed in (
            ("arch", self.arch, ARCHS),
            ("backend", self.backend, BACKENDS),
            ("precision", self.precision, PRECISIONS),
            ("schedule", self.schedule, SCHEDULES),
        ):
            if value not in allowed:
                problems.append(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def resolved(self, gpu: bool, cpu_bfloat16: bool = False) -> TrainSettings:
        """These settings with every automatic choice filled in for the device (`cpu_bfloat16`: the CPU
        computes bfloat16 natively). A run saves the resolved values, so its config.json says exactly
        what was trained."""
        batch_size = self.batch_size or (GPU_BATCH_SIZE if gpu else RECIPE_BATCH_SIZE)
        base = COSINE_LEARNING_RATE if self.schedule == "cosine" else RECIPE_LEARNING_RATE
        learning_rate = self.learning_rate or base * math.sqrt(batch_size / RECIPE_BATCH_SIZE)
        # A 1-epoch quick look has no room for a warmup epoch: it decays from the peak at once.
        warmup_epochs = min(self.warmup_epochs, self.epochs - 1)
        precision = self.precision
        if precision == "auto":
            # bfloat16 speed on a CPU comes from oneDNN, which only the TensorFlow backend uses.
            native_bf16 = cpu_bfloat16 and self.backend == "tensorflow"
            precision = "mixed" if gpu else ("bfloat16" if native_bf16 else "float32")
        epoch_validation = self.epoch_validation
        if self.needs_epoch_validation:
            epoch_validation = True
        elif epoch_validation is None:
            epoch_validation = gpu
        return dataclasses.replace(
            self,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_epochs=warmup_epochs,
            precision=precision,
            epoch_validation=epoch_validation,
        )

    @property
    def needs_epoch_validation(self) -> bool:
        """The plateau schedule and early stopping decide from each epoch's validation score."""
        return self.schedule == "plateau" or self.early_stopping > 0

    @property
    def members(self) -> list[tuple[int, int]]:
        """(fold, seed index) for every ensemble member, in training order: all folds of seed 0 first,
        so an interrupted run already has an out-of-fold prediction for every row."""
        return [(fold, s) for s in range(self.seeds) for fold in range(self.folds)]

    def member_threads(self, member: tuple[int, int]) -> int:
        """CPU threads that `member` trains with: the run's cpu_threads, or for the members of a last
        round that leaves workers idle (5 members on 2 workers: the fifth), those workers' threads as
        well. A pure function of the settings, so a member has its thread count, and its numbers,
        whichever members were done before it, on a resume too. 0 (a GPU run): the device's default."""
        members = self.members
        left = len(members) % self.cpu_workers if self.cpu_threads and self.cpu_workers > 1 else 0
        if left and members.index(member) >= len(members) - left:
            return self.cpu_threads * (self.cpu_workers // left)
        return self.cpu_threads

    def trains_alone(self, member: tuple[int, int]) -> bool:
        """Whether `member` is one of a last round's members, which train in processes of their own
        with more threads than the run's workers (`member_threads`)."""
        return self.member_threads(member) != self.cpu_threads

    def member_seed(self, fold: int, seed_index: int) -> int:
        return self.seed + 1000 * seed_index + fold

    def cli_options(self, gpu: bool = False, cpu_bfloat16: bool = False) -> list[str]:
        """The `kaggle-mnist train` options that give these (resolved) settings again on a machine with
        or without a GPU and native bfloat16: only what differs from the defaults and from what the
        automatic choices would resolve to."""
        defaults = TrainSettings()
        auto_batch = dataclasses.replace(self, batch_size=0).resolved(gpu, cpu_bfloat16).batch_size
        automatic = dataclasses.replace(
            self,
            learning_rate=0.0,
            precision="auto",
            epoch_validation=None,
            warmup_epochs=defaults.warmup_epochs,
            cpu_threads=0,
            cpu_workers=0,
        ).resolved(gpu, cpu_bfloat16)
        options = []
        for name, flag in CLI_FLAGS.items():
            value = getattr(self, name)
            reference = getattr(automatic if name in AUTOMATIC else defaults, name)
            if name == "batch_size":
                reference = auto_batch
            if value == reference:
                continue
            if isinstance(value, bool):
                on, off = flag.split("/")
                options.append(on if value else off)
            else:
                options.append(f"{flag} {value!r}" if isinstance(value, float) else f"{flag} {value}")
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainSettings:
        """Settings as saved in a run's config.json; one saved before a setting existed gets the value
        that trained as the code of its day did (INTRODUCED), not today's default."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**INTRODUCED, **values}.items() if k in known})


# Settings that were screened and removed, at the value that trains as today's code does: a run saved
# with one of them at that value is the same run as today's; at any other, it is not.
RETIRED = {"ema": False, "label_smoothing": 0.0, "elastic": 0.0}
# Settings added since runs were first saved, at the value that trains as the code before them did: a
# config.json without one was trained that way (and is continued that way).
# (width: runs saved before it existed trained the published network, at 1, which the default no longer is.)
INTRODUCED = {"precise_bn": False, "cpu_workers": 1, "width": 1.0}


@dataclass(frozen=True)
class Flag:
    """How one setting appears on the command line of `train`, `run` and `kernel-script`."""

    flag: str  # "--name", or "--on/--off" for a switch
    help: str


# The settings a user sets on the command line, declared once: cli/options.py makes every command's options
# from this table, and a run's config.json turns back into the command that trains or repairs it
# (`TrainSettings.cli_options`). Defaults live in TrainSettings alone.
OPTIONS: dict[str, Flag] = {
    "folds": Flag("--folds", "Stratified k-fold splits; each row is validated once."),
    "seeds": Flag("--seeds", "Differently seeded models per fold (members = folds x seeds)."),
    "epochs": Flag("--epochs", "Epochs per member."),
    "batch_size": Flag(
        "--batch-size", "Training batch size; 0 = auto: 64 on CPU (the recipe), 256 on a GPU."
    ),
    "arch": Flag(
        "--arch",
        "Network: bncnn (the 2018 recipe), lenet or mlp (tutorial baselines).",
    ),
    "width": Flag("--width", "Channels of every convolution times this (cost grows as its square)."),
    "learning_rate": Flag(
        "--lr",
        "Learning rate (Adam; the peak of the cosine schedule); 0 = auto: 2e-3 for cosine, 1e-3 for the "
        "other schedules, x sqrt(batch size / 64).",
    ),
    "schedule": Flag(
        "--schedule",
        "exponential (lr x 0.95^epoch), plateau (halve when validation loss stalls) or cosine (linear "
        "warmup over --warmup-epochs, then a cosine decay to zero at the last step).",
    ),
    "warmup_epochs": Flag("--warmup-epochs", "Epochs of linear warmup before the cosine decay."),
    "dropout_rate": Flag(
        "--dropout",
        "Dropout rate (0 = off): bncnn after each convolution block and before the classifier, lenet "
        "before the classifier.",
    ),
    "early_stopping": Flag(
        "--early-stopping",
        "Stop a member after this many epochs without better validation accuracy and keep its best "
        "weights (0 = off; on, the CV accuracy is slightly optimistic: the fold chose the weights).",
    ),
    "augment": Flag("--augment/--no-augment", "Random rotation, zoom and shift while training."),
    # As Keras' RandomRotation/RandomZoom/RandomTranslation and the classic ImageDataGenerator recipe
    # name them: each drawn uniformly within +/- the value while training.
    "rotation_degrees": Flag("--rotation", "Augmentation: rotation range, degrees."),
    "zoom": Flag("--zoom", "Augmentation: zoom range, a fraction."),
    "shift": Flag("--shift", "Augmentation: shift range, a fraction of the side."),
    "subset": Flag("--subset", "Train on the first N rows only, for a quick look (0 = all)."),
    "holdout": Flag(
        "--holdout",
        "Keep N labelled rows of train.csv (a stratified draw) out of all training and every choice, and "
        "predict them instead of test.csv: the submission's predictor scored on known labels, with its "
        "standard error. For measuring a recipe; such a run has nothing to submit (0 = off).",
    ),
    "holdout_seed": Flag("--holdout-seed", "Which rows --holdout draws."),
    "seed": Flag("--seed", "Base seed of every member."),
    "backend": Flag("--backend", "Keras backend."),
    "precision": Flag(
        "--precision",
        "auto (mixed float16 on a GPU; mixed bfloat16 on a CPU with AVX512_BF16 or AMX, float32 on other "
        "CPUs), float32, mixed (float16) or bfloat16.",
    ),
    "precise_bn": Flag(
        "--precise-bn/--no-precise-bn",
        "After its last epoch, set each member's batch-norm statistics to those of its final weights over "
        "its training rows (a few seconds); off: the moving averages from training, as runs saved before.",
    ),
    "epoch_validation": Flag(
        "--epoch-validation/--no-epoch-validation",
        "Score the validation fold after every epoch (learning curves in `report`). Default: on a GPU "
        "yes, on a CPU no (1.5x the time per epoch); always on with --schedule plateau or --early-stopping. "
        "The CV accuracy is the same either way.",
    ),
}
CLI_FLAGS = {name: option.flag for name, option in OPTIONS.items()}
# The values of the settings that are a fixed choice, for Typer.
CHOICES = {"arch": Arch, "schedule": Schedule, "backend": Backend, "precision": Precision}

# Named sets of settings, one `--recipe` away. A recipe fills in what the command line leaves at its
# default; an option given explicitly wins. Each one's accuracy on held-out rows is in the README.
RECIPES: dict[str, dict] = {
    "default": {},
    # Under a third of the default's time, the frontier's closest such point to 10 members at 1x
    # (benchmarks/frontier.md: -0.044 pt paired over 3 holdout seeds, short of the 0.02 pt sought): 3
    # members of the published width, the last on both cores of a 2-core CPU.
    "quick": {"folds": 3, "width": 1.0},
    # For a GPU session: more and longer-trained members, the levers that measured best on held-out rows
    # (benchmarks/README.md, "Findings"); about 3x the default's training.
    "best": {"seeds": 3, "epochs": 40, "rotation_degrees": 5.0, "zoom": 0.05, "shift": 0.05, "width": 1.0},
}
Recipe = Choice("Recipe", {name: name for name in RECIPES})
# Resolved from 0/None/auto by `resolved`: compared with what the automatic choice gives.
AUTOMATIC = {"batch_size", "learning_rate", "precision", "epoch_validation", "warmup_epochs"}
