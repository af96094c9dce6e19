"""Every setting of a training run, in one place, with the defaults that measured best.

The defaults were chosen on the VALIDATION split of the shared movie-poster dataset (7242 posters;
make_split seed 0 with poster groups: 4635 train, 1155 validation, 1452 test; 23 genres with >= 10
positives; macro over genres with >= 10 positives in the split) with EfficientNet-Lite0 features
of the whole poster stretched to 320x224. Each head trained at lr 1e-4, dropout 0.5, batch 256,
early stopping (patience 10); figures from ``benchmarks/head_comparison.py``:

    head (flip = features averaged with the mirror image's)   val AUC  val AP  test AUC  test AP
    multilabel linear, BCE               flip                  0.764    0.322    0.748    0.295
    multilabel MLP 512, BCE              flip                  0.783    0.333    0.767    0.309
    multilabel MLP 512, BCE              no flip               0.781    0.334    0.765    0.308
    multilabel linear, ASL               flip                  0.763    0.319    0.746    0.291
    multilabel MLP 512, ASL              flip                  0.756    0.322    0.735    0.289
    per-genre linear (logistic), BCE     flip                  0.759    0.316    0.740    0.281
    per-genre MLP 64 per genre, BCE      flip                  0.773    0.324    0.756    0.296

At lr 1e-3 every head peaked within 3-5 epochs and lost about 0.01 AUC. Seeds move the MLP's
figures by about 0.002. Flip is off by default: its 0.002 is within that noise, and it doubles
the backbone's work in feature extraction and in every prediction (a served request included).

Measured again on the default input (256x160) with poster text (same split; the text head is an
MLP on the 385 text features; late = the two heads' logits blended with the weight tuned on
validation), one seed; each cell is validation AUC / test AUC, and the seconds train all three
heads (image, text, concat) on 1 thread:

    MLP hidden, lr     image          text           concat         late           test AP late  seconds
    512, 1e-4          0.780 / 0.748  0.684 / 0.700  0.797 / 0.783  0.802 / 0.786  0.322         77
    512, 3e-4          0.780 / 0.746  0.686 / 0.702  0.796 / 0.781  0.803 / 0.787  0.323         35
    256, 3e-4          0.780 / 0.748  0.692 / 0.699  0.801 / 0.785  0.805 / 0.790  0.327         27

(Both tables were measured on the last stage's pooled features alone, before the stages before it
joined them; see :data:`postergenre.models.backbones.POOLED_STAGES`.)

So the defaults are a 256-wide MLP at lr 3e-4 (as good, three times faster: the warm pipeline is
mostly head training), and late fusion, which beat concatenation on validation in every run above
and needs no head of its own on top of the image and text heads (``--fusion auto`` tries both).
Early stopping waits 6 epochs, not 10: both stopped both heads at the same best epoch.

Two later changes, measured on the default features (lite0 256x160 with pooled stages, late
fusion; test macro AUC / AP): the heads are trained again on train + validation for the epochs
early stopping chose (``refit``; postergenre.training.refit), 0.795 / 0.340 -> 0.798 / 0.352; and
the poster text has the words OCR glued together split apart (postergenre.text.glued_words): the
text head 0.699 -> 0.723, and both changes together 0.803 / 0.359 and 0.805 / 0.357 in two runs
that differed only in their dropout masks (that much is noise).

Then the default input grew from 256x160 to 320x224 (postergenre.features.extract): validation
macro AUC image 0.788 -> 0.795, late fusion 0.816 -> 0.821; test 0.807 / 0.358 -> 0.818 / 0.373.

On those features, with bfloat16 head training (``precision``: fp32 measured within 0.001 of it at lr
3e-4; at the default below, validation late AUC 0.829 in fp32 against 0.824 for seed 0, and 0.826
against 0.826 for seed 1: the image head's early stop moved, which is seed-level noise),
validation macro AUC image / text / late and test AUC / AP of the late-fused model, and the seconds
of a warm run in one process (one run each: about 2 s of noise):

    multi-label MLP 256                  image   text    late    test late      seconds
    dropout 0.5, lr 3e-4                 0.796   0.717   0.822   0.819 / 0.376   9.6
    dropout 0.6, lr 6e-4                 0.798   0.725   0.825   0.820 / 0.375   5.3
    dropout 0.7, lr 3e-4                 0.805   0.724   0.829   0.821 / 0.377  11.7
    dropout 0.7, lr 3e-4, seed 1         0.802   0.718   0.828   0.823 / 0.380  10.8
    dropout 0.7, lr 6e-4                 0.798   0.727   0.824   0.820 / 0.376   6.9
    dropout 0.8, lr 3e-4 (fp32)          0.803   0.716   0.825   0.818 / 0.364  24.9
    hidden 512, dropout 0.5 (fp32)       0.801   0.713   0.826   0.814 / 0.374  13.2
    dropout 0.7, lr 4.5e-4               0.803   0.730   0.829   0.821 / 0.378  13.0

So a shared MLP head on a frozen backbone's features drops 0.7 of its inputs (and hidden units) by
default, at lr 6e-4. Lower rates measured 0.005 more validation AUC, but a warm run is mostly these
heads' epochs (image head: 16 at 6e-4, 36 at 4.5e-4, 44 at 3e-4) and took 9.2-11.9 s at 6e-4 against
12.6-16.2 s at 4.5e-4 and 14.9-16.2 s at 3e-4, which the 15 s budget of a warm run cannot hold.
The per-genre MLPs keep 0.5 and 3e-4 (0.800 against 0.798 validation late AUC with 0.7 and 6e-4).
Seeds move test AP by about 0.005.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MODES = ("multilabel", "per-genre")
HEADS = ("linear", "mlp")
LOSSES = ("bce", "asl")
# Poster text (postergenre.training.fusion): auto tries it when the text extra is installed and keeps
# it only if validation says so; on always fuses; off trains on the image alone.
TEXT_MODES = ("auto", "on", "off")
FUSIONS = ("auto", "concat", "late")
# Head training's matrix products: bf16 where the CPU has it natively (postergenre.training.loop.native_bf16).
PRECISIONS = ("auto", "fp32", "bf16")
# The shared MLP head on a frozen backbone's features was tuned apart from the other heads (see above).
TUNED_MLP_DROPOUT, DEFAULT_DROPOUT = 0.7, 0.5
TUNED_MLP_LR, DEFAULT_LR = 6e-4, 3e-4
DEFAULT_BACKBONE = "efficientnet_lite0"
# The backbone with no pretrained weights: trained end to end on the images (postergenre.training.images).
IMAGE_BACKBONE = "custom_cnn"
# Joins the backbones of an ensemble: "efficientnet_lite0+mobilenet_v2" trains one head on each
# backbone's features and averages their logits (postergenre.training.heads.EnsembleHead). A member
# may name its input size, "efficientnet_lite0@320x224"; else it reads its default poster input.
ENSEMBLE_JOIN = "+"
MEMBER_SIZE = "@"


def split_member(member: str) -> tuple[str, tuple[int, int] | None]:
    """``"NAME"`` or ``"NAME@HxW"`` as (backbone name, input size or None)."""
    name, _, size = member.partition(MEMBER_SIZE)
    if not size:
        return name, None
    height, _, width = size.partition("x")
    if not (height.isdigit() and width.isdigit()) or int(height) < 32 or int(width) < 32:
        raise ValueError(
            f"backbone {member!r}: expected NAME@HEIGHTxWIDTH with sizes of at least 32, e.g. {name}@320x224"
        )
    return name, (int(height), int(width))


@dataclass
class TrainConfig:
    """The resolved settings of one run; written to ``config.json``."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    resize: str = "stretch"
    input_size: tuple[int, int] | None = None  # None: the backbone's, reshaped to a poster for stretch/pad
    flip: bool = False
    # Stages before the last whose pooled outputs join the features; None: the backbone's registered
    # choice (3 for the bundled ImageNet backbones, measured in postergenre.models.backbones; 0 elsewhere).
    pooled_stages: int | None = None
    # Random flip, mild crop and colour jitter of the posters; only when the backbone trains on images.
    augment: bool = False
    # Train the backbone's last K stages (blocks) with the head, on cached activations; 0: frozen backbone.
    fine_tune: int = 0
    mode: str = "multilabel"
    head: str = "mlp"
    hidden: int | None = None  # None: 256 for a shared MLP, 64 per genre for a per-genre MLP
    # On the input features (and the hidden layer of an MLP). None: 0.7 for a shared MLP head on the
    # features of a frozen backbone (measured best on validation, see above), 0.5 for the others.
    dropout: float | None = None
    loss: str = "bce"
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05
    epochs: int = 200
    # Measured on the default features (image and text heads): patience 4, 6 and 10 stopped at the same
    # best epochs (29 and 50) with the same figures; 6 leaves a margin and saves 4 epochs a head.
    patience: int = 6
    # Once early stopping has chosen the epoch count (and thresholds and fusion weight are tuned on the
    # validation predictions), train the saved heads again on train + validation for that many epochs
    # (postergenre.training.refit). None: on for heads on cached features; off where the backbone
    # trains, whose epochs cost minutes.
    refit: bool | None = None
    # 1e-3 overfits within 3-5 epochs on ~5k posters; 1e-4 peaks at epoch 40-100, 3e-4 at 20-40.
    # None: 6e-4 for a shared MLP head on the features of a frozen backbone (at dropout 0.7, see
    # above), 3e-4 for the others.
    lr: float | None = None
    weight_decay: float = 1e-2
    batch_size: int = 256  # 0: full batch
    # postergenre.data.genres.DEFAULT_MIN_POSITIVES, written out so that importing this module (for the
    # command line's help) does not import pandas; a test keeps the two equal.
    min_positives: int = 10
    # Genres with fewer test positives than this are shown but kept out of the macro figures.
    min_test_positives: int = 10
    seed: int = 0
    text: str = "auto"
    # concat: image and text features into one head; late: an image head and a text head, their logits
    # blended; auto: whichever has the better validation macro AUC (one more head to train).
    fusion: str = "late"
    feature_batch_size: int = 32
    # Heads on cached features are small: one thread trains a linear head as fast as several, and
    # avoids the collapse we measured (5-20x slower per step) when other processes share the cores.
    threads: int | None = 1
    # auto: bfloat16 matrix products in head training where the CPU multiplies them natively, else fp32.
    precision: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.text not in TEXT_MODES:
            raise ValueError(f"unknown text setting {self.text!r}; expected one of {', '.join(TEXT_MODES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; expected one of {', '.join(FUSIONS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.epochs < 1 or self.patience < 1:
            raise ValueError(f"epochs and patience must be at least 1, got {self.epochs} and {self.patience}")
        if self.input_size is not None:
            self.input_size = tuple(int(v) for v in self.input_size)
        if MEMBER_SIZE in self.backbone and not self.is_ensemble:
            self._take_member_size()
        if self.augment and not self.from_images:
            raise ValueError(
                f"--augment applies to training on images (--backbone {IMAGE_BACKBONE}) for now; "
                f"{self.backbone!r} trains a head on cached features"
            )
        if self.text == "on" and self.from_images:
            raise ValueError(
                f"poster text is fused with cached image features; {IMAGE_BACKBONE} trains on images, "
                "so use --no-text with it or choose a pretrained backbone"
            )
        if self.pooled_stages is not None and self.pooled_stages < 0:
            raise ValueError(f"pooled_stages must be 0 or more, got {self.pooled_stages}")
        if self.pooled_stages and (self.from_images or self.fine_tune):
            raise ValueError(
                f"--pooled-stages {self.pooled_stages} applies to frozen pretrained backbones; "
                f"{'--fine-tune' if self.fine_tune else IMAGE_BACKBONE} pools the last stage only: drop it"
            )
        if self.refit and self.trains_backbone:
            raise ValueError(
                "--refit trains a head on cached features again; "
                f"{'--fine-tune' if self.fine_tune else IMAGE_BACKBONE} trains the backbone: drop --refit"
            )
        if self.is_ensemble:
            self._check_ensemble()
        if self.fine_tune:
            self._check_fine_tune()

    def _take_member_size(self) -> None:
        """One backbone named as an ensemble member, ``NAME@HxW``: the same as ``--input-size HxW``."""
        name, size = split_member(self.backbone)
        if self.input_size is not None and self.input_size != size:
            raise ValueError(
                f"{self.backbone!r} names input {size[0]}x{size[1]} and --input-size names "
                f"{self.input_size[0]}x{self.input_size[1]}; give one"
            )
        self.backbone, self.input_size = name, size

    def _check_ensemble(self) -> None:
        """An ensemble joins frozen pretrained backbones, each at its own measured input."""
        members = self.members
        names = [split_member(member)[0] for member in members]
        problems = []
        if len(set(members)) < len(members) or "" in names:
            problems.append("name each backbone once")
        if IMAGE_BACKBONE in names:
            problems.append(f"{IMAGE_BACKBONE} trains on images, not on cached features; leave it out")
        if self.fine_tune:
            problems.append("--fine-tune applies to one backbone; drop it")
        if self.weights is not None:
            problems.append("--weights names one backbone's weights; ensembles use the bundled weights")
        if self.input_size is not None:
            problems.append("--input-size would force one size on backbones measured at their own; drop it")
        if self.fusion == "concat":
            problems.append("concat fusion needs one head over all features; use --fusion late or auto")
        if problems:
            raise ValueError(f"ensemble {self.backbone!r}: " + "; ".join(problems))

    @property
    def members(self) -> list[str]:
        """The backbones of the run: one, or an ensemble's (``NAME`` or ``NAME@HxW``), in the order given."""
        return self.backbone.split(ENSEMBLE_JOIN)

    @property
    def is_ensemble(self) -> bool:
        return ENSEMBLE_JOIN in self.backbone

    def _check_fine_tune(self) -> None:
        """K must name a tail of a pretrained backbone's stages; the stage count needs the network built."""
        if self.from_images:
            raise ValueError(
                f"--fine-tune {self.fine_tune}: {IMAGE_BACKBONE} trains all of itself on images; expected 0"
            )
        if self.flip:
            raise ValueError(
                "--flip averages pooled features of the mirror image, which fine-tuning does not cache; "
                "drop --flip (fine-tuning flips the cached activation maps at random instead)"
            )
        from postergenre.models.backbones import create_backbone

        names = [name for name, _ in create_backbone(self.backbone, pretrained=False).stages()]
        if not 0 <= self.fine_tune <= len(names):
            raise ValueError(
                f"--fine-tune {self.fine_tune}: expected 0 (frozen) to {len(names)}, the stages of {self.backbone} "
                f"({', '.join(names)}) counted from the end (1: {names[-1]} only)"
            )

    @property
    def from_images(self) -> bool:
        """Whether the backbone trains on the posters (from scratch) instead of a head on cached features."""
        return self.backbone == IMAGE_BACKBONE

    @property
    def trains_backbone(self) -> bool:
        """Whether the run changes the backbone's weights (from scratch, or fine-tuning its last stages)."""
        return self.from_images or self.fine_tune > 0

    @property
    def refits(self) -> bool:
        """Whether the saved heads are trained again on train + validation (``refit``, or its default)."""
        return self.refit if self.refit is not None else not self.trains_backbone

    @property
    def head_type(self) -> str:
        """The head class: a per-genre MLP keeps one small MLP per genre, nothing shared."""
        return "per_genre_mlp" if self.mode == "per-genre" and self.head == "mlp" else self.head

    @property
    def hidden_size(self) -> int:
        if self.hidden is not None:
            return self.hidden
        return 64 if self.head_type == "per_genre_mlp" else 256

    @property
    def tuned_mlp(self) -> bool:
        """Whether the head is the shared MLP on a frozen backbone's features, whose dropout and learning
        rate were tuned apart from the other heads'."""
        return self.head_type == "mlp" and not self.trains_backbone

    @property
    def dropout_rate(self) -> float:
        if self.dropout is not None:
            return self.dropout
        return TUNED_MLP_DROPOUT if self.tuned_mlp else DEFAULT_DROPOUT

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return TUNED_MLP_LR if self.tuned_mlp else DEFAULT_LR

    @classmethod
    def default(cls, name: str):
        """The default value of one setting (for the command line's help)."""
        return next(f.default for f in fields(cls) if f.name == name)

    def to_dict(self) -> dict:
        from postergenre.training.loop import uses_bf16

        data = asdict(self)
        data["input_size"] = list(self.input_size) if self.input_size else None
        data["head_type"], data["hidden"], data["refit"] = self.head_type, self.hidden_size, self.refits
        data["dropout"], data["lr"] = self.dropout_rate, self.learning_rate
        data["precision"] = "bf16" if uses_bf16(self.precision) else "fp32"  # what auto chose on this machine
        return data


def resolve_preprocessing(config: TrainConfig):
    """The backbone's preprocessing for posters with the run's resize policy, at its input size.

    Without an input size this is what ``postergenre features`` extracts by default, so the two
    share their cached features.
    """
    from postergenre.features import default_preprocessing

    # An ensemble's first backbone stands for it here; each backbone reads its own (member_preprocessing).
    first, *others = config.backbone.split(ENSEMBLE_JOIN)
    first, size = split_member(first)
    preprocessing = default_preprocessing(first, resize=config.resize)
    if size is not None:
        preprocessing = preprocessing.with_policy(config.resize, size)
    if config.input_size is not None:
        preprocessing = preprocessing.with_policy(config.resize, tuple(config.input_size))
    if not others:
        config.input_size = tuple(preprocessing.input_size)
    return preprocessing


def member_preprocessing(config) -> dict:
    """Each backbone's preprocessing for posters, by name: the run's one, or every ensemble member's own."""
    from postergenre.features import default_preprocessing

    if not config.is_ensemble:
        return {config.backbone: resolve_preprocessing(config)}
    preprocessing = {}
    for member in config.members:
        name, size = split_member(member)
        preprocessing[member] = default_preprocessing(name, resize=config.resize)
        if size is not None:
            preprocessing[member] = preprocessing[member].with_policy(config.resize, size)
    return preprocessing


def versions() -> dict:
    """Versions of Python and of the libraries whose behaviour shapes a run's numbers."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("postergenre", "torch", "numpy", "scikit-learn", "onnxruntime", "pillow", "safetensors"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    from postergenre import __version__

    found["postergenre"] = __version__
    return found
