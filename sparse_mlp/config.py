"""One flat, commented configuration of a run, saved with every run.

Defaults are the paper's (docs/semantics.md, "Paper hyper-parameters") where it has one; a
dataset preset (``presets.py``) fills the per-dataset hyper-parameters of
Table 7; every field can be overridden from the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# The choices of the string fields.  They live here, in a module without the
# compiled kernels, so that a configuration can be built, validated and saved
# before ``make``; activations.py and layers.py take theirs from here.
HIDDEN_ACTIVATIONS = ("relu", "allrelu", "leaky", "srelu", "tanh", "sigmoid")
OUTPUTS = ("softmax", "sigmoid", "linear")  # linear: regression (identity + squared error)
TASKS = ("classification", "regression")
CLASS_WEIGHTS = ("balanced",)
WEIGHT_INITS = ("normal", "xavier", "he_uniform", "xavier_sparse", "he_uniform_sparse",
                "kaiming_uniform_sparse")
# 'zero' is for an output layer only (--output-init zero): a hidden layer of
# zeros passes no gradient to the layers below it
INITS = (*WEIGHT_INITS, "zero")
DECAY_MODES = ("paper", "decoupled")
# beyond the paper (sparse_mlp/growth.py)
GROWTH_MODES = ("random", "gradient", "momentum")
GROWTH_INITS = ("zero", "init")
DENSITY_ALLOCATIONS = ("er", "erk")
# --parallel: whose reading of WASAP/WASSP-SGD (README "Parallel training")
PARALLEL_SEMANTICS = ("code", "text")
PHASE1_DECAYS = ("paper", "none")
# --augment: cifar = random shifts (up to 3 pixels) and horizontal flips of 32x32x3 images
AUGMENTS = ("cifar",)
# --er-sampling: exact = Binomial count of distinct positions; paper = eps*(n_in+n_out)
# positions drawn with replacement, duplicates merged (the authors' 'normal' path)
ER_SAMPLINGS = ("exact", "paper")
# --keep-best: test = checkpoints/best.h5 holds the best-test-accuracy epoch's model
KEEP_BEST = ("test",)


def kaiming_refusal(weight_init: str, activation: str) -> str | None:
    """Why ``weight_init`` cannot go with ``activation``, or None: the gain of
    ``kaiming_uniform_sparse`` (activations.init_gain2) needs an activation
    of fixed shape."""
    if weight_init == "kaiming_uniform_sparse" and activation == "srelu":
        return ("--weight-init kaiming_uniform_sparse needs a fixed-shape activation "
                "(SReLU's shape is trained, so it has no gain to scale by)")
    return None


@dataclass
class TrainConfig:
    # --- data -----------------------------------------------------------
    dataset: str = "digits"            # paper name, 'synthetic', 'digits', or a file path
    data_dir: str | None = None        # dataset files (default: $SPARSE_MLP_DATA_DIR / cache dir)
    n_train: int | None = None         # subsample sizes (None: the dataset's own split)
    n_test: int | None = None
    n_features: int | None = None      # synthetic only
    n_classes: int | None = None       # synthetic only
    label_column: str | None = None    # CSV/TSV: label column name or index (default: last)
    test_fraction: float | None = None  # user files without a test set (default 0.2)
    val_fraction: float | None = None  # a stratified validation split of the training set;
    #                                    the best epoch is chosen on it (None: the paper's
    #                                    protocol, best test accuracy, no validation)
    task: str = "classification"       # classification | regression (a user file's numeric
    #                                    label column as float targets, linear output + MSE;
    #                                    targets standardised with the training mean/std)
    augment: str | None = None         # None | cifar: random shifts and horizontal flips of
    #                                    the training images in the gather (augment.py)
    # --- architecture ---------------------------------------------------
    hidden: list[int] = field(default_factory=lambda: [1000, 1000, 1000])
    epsilon: float = 20.0              # Erdos-Renyi density: ~eps*(n_in+n_out) weights per layer
    er_sampling: str = "exact"         # exact: Binomial(n_in*n_out, p) distinct positions |
    #                                    paper: eps*(n_in+n_out) draws with replacement
    activation: str = "allrelu"        # relu | allrelu | leaky | srelu | tanh | sigmoid
    alpha: float | None = 0.6          # All-ReLU slope (leaky: negative slope)
    output: str = "softmax"            # softmax (+ cross-entropy) | sigmoid (+ MSE) | linear
    #                                    (+ squared error; --task regression sets it)
    weight_init: str = "he_uniform"    # normal | xavier | he_uniform
    # --- optimisation (reference momentum SGD) ----------------------------
    epochs: int = 500
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 2e-4         # paper: w = w + v - wd*w (not scaled by lr)
    decay_mode: str = "paper"          # paper | decoupled (w -= lr*wd*w)
    nesterov: bool = False
    dropout: float = 0.3               # on hidden activations, inverted scaling
    lr_schedule: str = "constant"      # constant (paper) | step | cosine (schedule.py)
    lr_step_every: int | None = None   # step: multiply the lr by lr_step_gamma every N epochs
    lr_step_gamma: float = 0.1         # step: the factor
    lr_min: float = 0.0                # cosine: the floor, reached after the last epoch
    class_weight: str | None = None    # None | balanced: each sample's loss and delta times
    #                                    n / (n_classes * count of its class) (training set)
    # --- SET topology evolution -------------------------------------------
    evolution: bool = True             # False: static sparse topology
    zeta: float = 0.3                  # fraction of positive and of negative weights replaced
    # --- Importance Pruning -----------------------------------------------
    importance_pruning: bool = False
    ip_start: int = 200                # prune at the end of epoch e when e > ip_start ...
    ip_every: int = 10                 # ... and e % ip_every == 0
    ip_percentile: float = 20.0        # neurons at or below this percentile lose inputs
    post_prune: list[float] = field(default_factory=list)  # Table 6: percentiles, post-training
    # --- run --------------------------------------------------------------
    seed: int = 0
    threads: int | None = None         # kernel threads (default: kernels.default_threads)
    eval_every: int = 1                # evaluate the test set every N epochs (and the last)
    eval_batch_size: int = 1024
    train_eval: int = 0                # with every test evaluation: loss and accuracy without
    #                                    dropout on the first N training samples (0: off)
    out: str | None = None             # output folder (default: runs/<dataset>_<time>)
    preset: str | None = None          # the preset these values started from
    checkpoint_every: int | None = None  # epochs between checkpoints in <out>/checkpoints;
    #                                    None: every 10 minutes and after the last epoch; 0: off
    keep_checkpoints: int = 3          # newest checkpoints kept (older ones are deleted)
    keep_best: str | None = None       # test: keep the best-test-accuracy model as
    #                                    checkpoints/best.h5 (the paper's protocol, Table 6)
    save_topology: bool = False        # every epoch's connectivity to <out>/topology.h5
    diagnostics: bool = False          # per epoch: gradient flow on a fixed batch, nnz per
    #                                    layer, connections per input (diagnostics.json)
    activation_memory: str = "auto"    # fast: Z and A per hidden layer; lean: Z only (A
    #                                    recomputed in backprop); auto: fast if it fits
    micro_batch: int | None = None     # blocks of a batch, gradients accumulated (None: the
    #                                    whole batch if it fits, else the largest that does)
    # --- beyond the paper (sparse_mlp/growth.py, sparse_mlp/alpha.py) -----
    growth: str = "random"             # regrowth: random (SET, paper) | gradient (RigL-style)
    #                                    | momentum (sparse momentum, layer redistribution)
    growth_batches: int | None = None  # probe mini-batches for the gradient (None: 1 / 10)
    growth_init: str = "zero"          # gradient/momentum growth: new weights 0 | init draws
    regrow_init: str = "init"          # SET's random regrowth: init draws (paper) | zero
    growth_candidates: float | None = None  # None: search all empty positions; c: c x regrowth
    density_allocation: str = "er"     # er (paper: eps per layer) | erk (RigL, fixed budget)
    erk_power: float = 1.0             # erk: density ~ ((n_in+n_out)/(n_in*n_out))**power
    output_init: str | None = None     # the output layer's initial values (None: weight_init;
    #                                    zero: start at 0)
    lr_fan_in_cap: float | None = None  # a layer's step is lr*min(1, cap/mean fan-in) (None:
    #                                    lr everywhere, the paper's); see model.SparseMLP
    alpha_auto: bool = False           # --alpha auto: alpha from the input skewness at run start
    # --- parallel training over MPI (sparse_mlp/parallel; mpiexec -n K+1) --
    parallel: str | None = None        # None: sequential | wasap | wassp (paper Algorithm 1)
    phase1_epochs: int | None = None   # tau1: epochs of phase 1 (PS), then local training +
    #                                    averaging until --epochs (None: 70%, as the authors)
    warmup_epochs: float = 5.0         # wassp: lr ramps from lr to K*lr (Goyal et al.) over
    #                                    these epochs (code: by PS epoch, text: by step)
    parallel_semantics: str = "code"   # code: the authors' code, which produced Table 3 |
    #                                    text: the paper's text; the four settings below
    #                                    default (None) to the chosen variant's value
    phase2_sync_every: int | None = None  # phase 2: every N local steps a worker replaces its
    #                                    model by the PS's (code: round(0.3 * epochs); text:
    #                                    0, fully independent workers)
    phase1_decay: str | None = None    # weight decay in phase 1: paper (--weight-decay) | none
    #                                    (code: none, the authors' code; text: paper)
    parallel_ip_every: int | None = None  # Importance Pruning every N epochs under --parallel
    #                                    (code: 20; text: --ip-every)
    parallel_ip_percentile: float | None = None  # ... at this percentile (code: 10; text:
    #                                    --ip-percentile)
    mpi_wait: str = "auto"             # how ranks wait: spin | sleep | auto (sleep when the
    #                                    node's ranks x threads exceed its cores)
    mpi_chunk_bytes: int = 2**30       # largest single MPI message; bigger arrays go in chunks

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def nonfinite(self) -> list[str]:
        """Every number (or number in a list) that is NaN or infinite, named as
        its flag: a configuration error, never a run that diverges later."""
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                problems.append(f"--{f.name.replace('_', '-')} must be a finite number, got "
                                f"{bad[0]}")
        return problems

    @property
    def decay(self) -> float:
        """The per-step weight decay factor of the update rule."""
        return self.weight_decay if self.decay_mode == "paper" else self.lr * self.weight_decay

    def validate(self) -> None:
        """Refuse impossible settings before anything is allocated."""
        problems = self.nonfinite()
        if problems:  # NaN or inf would slip through every range check below
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        if not self.hidden or any(h < 1 for h in self.hidden):
            problems.append(f"--hidden must list positive layer widths, got {self.hidden}")
        if self.epsilon <= 0:
            problems.append(f"--epsilon must be positive, got {self.epsilon}")
        if self.activation not in HIDDEN_ACTIVATIONS:
            problems.append(f"--activation must be one of {', '.join(HIDDEN_ACTIVATIONS)}")
        if self.activation == "allrelu" and self.alpha is None:
            problems.append("--activation allrelu needs --alpha (the paper uses 0.05-0.75)")
        if self.alpha is not None and self.alpha < 0:
            problems.append(f"--alpha must be non-negative (All-ReLU alternates the sign "
                            f"itself), got {self.alpha}")
        if self.output not in OUTPUTS:
            problems.append(f"--output must be one of {', '.join(OUTPUTS)}")
        if self.task not in TASKS:
            problems.append(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        elif self.task == "regression" and self.output != "linear":
            problems.append(f"--task regression trains a linear output with squared error: "
                            f"drop --output {self.output}")
        elif self.task == "classification" and self.output == "linear":
            problems.append("--output linear is the regression output: add --task regression")
        if self.class_weight is not None and self.class_weight not in CLASS_WEIGHTS:
            problems.append(f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}, got "
                            f"{self.class_weight!r}")
        elif self.class_weight is not None and self.task == "regression":
            problems.append("--class-weight weighs classes: it needs --task classification")
        refusal = kaiming_refusal(self.weight_init, self.activation)
        if refusal:
            problems.append(refusal)
        if self.weight_init not in WEIGHT_INITS:
            problems.append(f"--weight-init must be one of {', '.join(WEIGHT_INITS)}"
                            + (" ('zero' is for the output layer: --output-init zero)"
                               if self.weight_init == "zero" else ""))
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if self.lr_schedule not in ("constant", "step", "cosine"):
            problems.append("--lr-schedule must be constant, step or cosine")
        elif self.lr_schedule == "step" and not (self.lr_step_every or 0) >= 1:
            problems.append("--lr-schedule step needs --lr-step-every N (epochs, at least 1)")
        elif self.lr_schedule != "step" and self.lr_step_every is not None:
            problems.append("--lr-step-every belongs to --lr-schedule step")
        if not self.lr_step_gamma > 0:
            problems.append(f"--lr-step-gamma must be positive, got {self.lr_step_gamma}")
        if not 0 <= self.lr_min < self.lr:
            problems.append(f"--lr-min must be in [0, --lr), got {self.lr_min}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            problems.append(f"--val-fraction must be strictly between 0 and 1, got "
                            f"{self.val_fraction}")
        if not 0 <= self.momentum < 1:
            problems.append(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay < 1:
            problems.append(f"--weight-decay must be in [0, 1), got {self.weight_decay}")
        if self.decay_mode not in DECAY_MODES:
            problems.append(f"--decay-mode must be one of {', '.join(DECAY_MODES)}")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.zeta < 1:
            problems.append(f"--zeta must be in [0, 1), got {self.zeta}")
        if self.ip_every < 1:
            problems.append(f"--ip-every must be at least 1, got {self.ip_every}")
        if not 0 <= self.ip_percentile <= 100:
            problems.append(f"--ip-percentile must be in [0, 100], got {self.ip_percentile}")
        if any(not 0 <= p <= 100 for p in self.post_prune):
            problems.append(f"--post-prune percentiles must be in [0, 100], got {self.post_prune}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be at least 1, got {self.threads}")
        if self.eval_every < 1:
            problems.append(f"--eval-every must be at least 1, got {self.eval_every}")
        if self.eval_batch_size < 1:
            problems.append("--eval-batch-size must be at least 1")
        if self.train_eval < 0:
            problems.append(f"--train-eval must be 0 (off) or a number of training samples, "
                            f"got {self.train_eval}")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            problems.append(f"--checkpoint-every must be 0 (off) or a number of epochs, "
                            f"got {self.checkpoint_every}")
        if self.activation_memory not in ("auto", "fast", "lean"):
            problems.append("--activation-memory must be auto, fast or lean")
        if self.micro_batch is not None and self.micro_batch < 1:
            problems.append(f"--micro-batch must be at least 1, got {self.micro_batch}")
        if self.keep_checkpoints < 1:
            problems.append(f"--keep-checkpoints must be at least 1, got {self.keep_checkpoints}")
        # beyond the paper
        if self.growth not in GROWTH_MODES:
            problems.append(f"--growth must be one of {', '.join(GROWTH_MODES)}")
        if self.growth_init not in GROWTH_INITS:
            problems.append(f"--growth-init must be one of {', '.join(GROWTH_INITS)}")
        if self.regrow_init not in GROWTH_INITS:
            problems.append(f"--regrow-init must be one of {', '.join(GROWTH_INITS)}")
        elif self.regrow_init != "init" and self.growth != "random":
            problems.append(f"--regrow-init applies to SET's random regrowth; with --growth "
                            f"{self.growth} the values of new weights are --growth-init's")
        if self.growth_batches is not None and self.growth_batches < 1:
            problems.append(f"--growth-batches must be at least 1, got {self.growth_batches}")
        if self.growth_candidates is not None and self.growth_candidates < 1:
            problems.append(f"--growth-candidates must be at least 1 (times the weights to "
                            f"regrow), got {self.growth_candidates}")
        if self.augment is not None and self.augment not in AUGMENTS:
            problems.append(f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.er_sampling not in ER_SAMPLINGS:
            problems.append(f"--er-sampling must be one of {', '.join(ER_SAMPLINGS)}")
        if self.keep_best is not None and self.keep_best not in KEEP_BEST:
            problems.append(f"--keep-best must be one of {', '.join(KEEP_BEST)}")
        elif self.keep_best is not None and self.val_fraction is not None:
            problems.append("--keep-best test keeps the best test epoch; with --val-fraction "
                            "best.h5 already holds the best validation epoch: drop one")
        if self.density_allocation not in DENSITY_ALLOCATIONS:
            problems.append(f"--density-allocation must be one of "
                            f"{', '.join(DENSITY_ALLOCATIONS)}")
        if not self.erk_power >= 0:
            problems.append(f"--erk-power must be non-negative, got {self.erk_power}")
        if self.output_init is not None and self.output_init not in INITS:
            problems.append(f"--output-init must be one of {', '.join(INITS)}")
        if self.lr_fan_in_cap is not None and not self.lr_fan_in_cap > 0:
            problems.append(f"--lr-fan-in-cap must be positive, got {self.lr_fan_in_cap}")
        if self.lr_fan_in_cap is not None and self.parallel is not None:
            problems.append("--lr-fan-in-cap is for sequential training only (the parallel "
                            "workers and parameter server use one step size): drop it or "
                            "--parallel")
        if self.alpha_auto and self.activation != "allrelu":
            problems.append("--alpha auto chooses the All-ReLU slope: it needs "
                            "--activation allrelu")
        # parallel (MPI)
        if self.parallel is not None and self.parallel not in ("wasap", "wassp"):
            problems.append(f"--parallel must be wasap or wassp, got {self.parallel!r}")
        if self.phase1_epochs is not None and not 0 <= self.phase1_epochs <= self.epochs:
            problems.append(f"--phase1-epochs must be between 0 and --epochs ({self.epochs}), "
                            f"got {self.phase1_epochs}")
        if not self.warmup_epochs >= 0:
            problems.append(f"--warmup-epochs must be non-negative, got {self.warmup_epochs}")
        if self.parallel_semantics not in PARALLEL_SEMANTICS:
            problems.append(f"--parallel-semantics must be one of "
                            f"{', '.join(PARALLEL_SEMANTICS)}, got {self.parallel_semantics!r}")
        if self.phase2_sync_every is not None and self.phase2_sync_every < 0:
            problems.append(f"--phase2-sync-every must be 0 (independent workers) or a number "
                            f"of steps, got {self.phase2_sync_every}")
        if self.phase1_decay is not None and self.phase1_decay not in PHASE1_DECAYS:
            problems.append(f"--phase1-decay must be one of {', '.join(PHASE1_DECAYS)}")
        if self.parallel_ip_every is not None and self.parallel_ip_every < 1:
            problems.append(f"--parallel-ip-every must be at least 1, got "
                            f"{self.parallel_ip_every}")
        if self.parallel_ip_percentile is not None and not 0 <= self.parallel_ip_percentile <= 100:
            problems.append(f"--parallel-ip-percentile must be in [0, 100], got "
                            f"{self.parallel_ip_percentile}")
        if self.mpi_wait not in ("auto", "spin", "sleep"):
            problems.append("--mpi-wait must be auto, spin or sleep")
        if self.mpi_chunk_bytes < 1:
            problems.append(f"--mpi-chunk-bytes must be positive, got {self.mpi_chunk_bytes}")
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


# keys of a run's config.json that are a record of the run, not settings
# (run.Run.write_config): the data's provenance, "model": "dense" for a dense
# run, "mpi" for a parallel one.  A key added to config.json besides the
# TrainConfig fields belongs here, or --config refuses the file.
RUN_RECORD_KEYS = ("data", "model", "mpi")
# settings of a config.json that --config does not reuse: where the run went
# and how many cores that machine had (results do not depend on it)
NOT_REUSED = ("out", "threads")


def read_run_config(path: str) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration of a run's ``config.json`` (``--config``), and its
    record keys (:data:`RUN_RECORD_KEYS`).

    ``out`` and ``threads`` are reset (:data:`NOT_REUSED`): a re-run goes to
    a new folder unless told, with this machine's cores.  Everything else is
    the run's resolved settings (preset, memory plan, ``--alpha auto``'s
    value), so the re-run computes the same epochs.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"--config {path} is not JSON: {exc}") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"--config {path} is not a run's config.json (a JSON object)")
    record = {k: saved.pop(k) for k in RUN_RECORD_KEYS if k in saved}
    try:
        cfg = TrainConfig.from_dict(saved)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc} (is it the config.json of a run written "
                          f"by this version of sparse_mlp?)") from None
    except TypeError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    return cfg.replace(**{k: None for k in NOT_REUSED}), record
