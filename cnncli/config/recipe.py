"""Recipes: TOML/YAML files validated by a pydantic schema.

A recipe names the data, the layers, the optimizer, the schedule and the training
length. Loading is strict: an unknown key, a wrong type or an impossible value fails
before any compute, naming the file, the key path, the line where it can be found,
and the closest valid key. ``--set key.path=value`` overrides go through the same
validation. Relative paths inside a recipe resolve against the recipe's folder.

Defaults live here and only here (the schema is the single source of truth).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from cnncli.config.source import DataSource, resolve_source
from cnncli.config.textfile import read_text
from cnncli.errors import LayerError, RecipeError, did_you_mean

OPTIMIZERS = (
    "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "adadelta",
    "lamb", "lion", "nadam", "radam",
)  # fmt: skip
SCHEDULES = ("constant", "step", "multistep", "cosine", "warmup_cosine", "onecycle", "exponential")
MAX_SEED = 2**32 - 1  # a JAX key holds 32 bits of the seed: 2**32 would train as seed 0, -1 as 2**32 - 1


def _scalar_types(annotation: Any) -> tuple[set[Any], Any]:
    """The scalar types a field annotation admits (through ``X | None``, ``Annotated``, ``Literal``), and its list's item type."""
    kinds: set[Any] = set()
    item = None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            more, more_item = _scalar_types(arg)
            kinds |= more
            item = item if more_item is None else more_item
        return kinds, item
    if origin is list:
        return kinds, typing.get_args(annotation)[0]
    if origin is Literal:
        return {type(v) for v in typing.get_args(annotation)}, None
    return {annotation}, None


def _loose(annotation: Any, value: Any) -> str | None:
    """Why pydantic would convert ``value`` to ``annotation`` loosely (``true`` as 1, ``"yes"`` as true), or None.

    A number field refuses a boolean, a boolean field refuses anything but true/false. An int
    for a float (``learning_rate = 1``) and a numeric string (YAML reads ``1e-3`` as one) stay valid.
    """
    kinds, item = _scalar_types(annotation)
    if isinstance(value, list):
        for i, element in enumerate(value if item is not None else ()):
            if reason := _loose(item, element):
                return f"item {i}: {reason}"
        return None
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, bool):
        if bool not in kinds and kinds & {int, float}:
            return "expected a number, not a boolean"
        return None
    if bool in kinds and not kinds & {int, float, str}:
        spelled = "a string" if isinstance(value, str) else "a number" if isinstance(value, int | float) else "that"
        return f"expected true or false (unquoted), not {spelled}"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_loose_conversion(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        """Refuse what pydantic would silently convert: ``epochs = true`` (1), ``tensorboard = "yes"`` (true)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and (reason := _loose(field.annotation, value)):
            raise ValueError(reason)
        return value


class AugmentOp(BaseModel):
    """One augmentation op: ``op`` and its arguments (checked by the data module)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    op: str = Field(description="Augmentation op name, e.g. flip_lr, random_crop.")


class Mnist1dConfig(_Strict):
    """``[data.mnist1d]``: the arguments of ``mnist1d.data.make_dataset`` (defaults: the package's own).

    The MNIST-1D benchmark (Greydanus, 2020) is generated, not downloaded: the same
    arguments give the same examples on every machine. ``train_split`` here is the
    fraction of ``num_samples`` in the ``train`` split (the rest is ``test``).
    """

    num_samples: int = Field(5000, ge=10, description="Examples in total (train + test), 1/10 per class.")
    train_split: float = Field(0.8, gt=0, lt=1, description="Fraction of the examples in the train split.")
    template_len: int = Field(12, ge=1, description="Length the digit template is stretched to (plus padding).")
    padding: list[int] = Field([36, 60], min_length=2, max_length=2, description="Zeros appended: [low, high].")
    scale_coeff: float = Field(0.4, ge=0, description="Random amplitude scaling, 1 +- coeff/2.")
    max_translation: int = Field(48, ge=1, description="Largest circular shift, in samples.")
    corr_noise_scale: float = Field(0.25, ge=0, description="Correlated (smoothed) background noise.")
    iid_noise_scale: float = Field(2e-2, ge=0, description="White noise added everywhere.")
    shear_scale: float = Field(0.75, ge=0, description="Random linear trend added.")
    shuffle_seq: bool = Field(False, description="Permute the time axis (the same way for all examples).")
    final_seq_length: int = Field(40, ge=2, description="Length of each signal: input shape (L, 1).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Generator seed (not train.seed): fixes the dataset.")

    @field_validator("padding")
    @classmethod
    def _ordered(cls, value: list[int]) -> list[int]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"padding must be [low, high] with 0 <= low <= high, got {value}")
        return value

    @field_validator("num_samples")
    @classmethod
    def _per_class(cls, value: int) -> int:
        if value % 10:  # make_dataset draws num_samples // 10 per class: the rest would be dropped silently
            raise ValueError(f"num_samples is a tenth per class: give a multiple of 10 (e.g. {value - value % 10}), "
                             f"got {value}")  # fmt: skip
        return value


class DataConfig(_Strict):
    """``[data]``: where examples come from and how they are batched."""

    source: str = Field(
        "digits",
        description='"digits" (bundled, offline) | "mnist1d" (generated) | "npz:PATH" | "tfds:NAME" | "folder:PATH"',
    )
    batch_size: int = Field(64, ge=1, description="Training batch size (global, all devices).")
    eval_batch_size: int = Field(256, ge=1, description="Batch size for evaluation.")
    train_split: str = Field("train", description="Split used for training.")
    eval_split: str = Field("test", description="Split evaluated after each epoch.")
    normalize: bool = Field(True, description="Standardize inputs with per-channel train statistics.")
    data_dir: str | None = Field(None, description="TFDS data directory (default: TFDS's own).")
    image_size: int | list[int] | None = Field(
        None, description="Resize images to this size: one side (32) or [height, width], at least 1 pixel."
    )
    channels: int | None = Field(None, ge=1, description="Convert images to this many channels: 1, 3 or 4.")
    image_key: str | None = Field(None, description="TFDS feature holding the image.")
    label_key: str | None = Field(None, description="TFDS feature holding the label.")
    strict: bool = Field(False, description="Fail on unreadable image files instead of skipping them.")
    memory_budget_mb: int = Field(2048, ge=1, description="Load datasets up to this size into memory.")
    pipeline: Literal["auto", "memory", "stream"] = Field(
        "auto", description="auto: memory when each split fits memory_budget_mb, else stream from disk (grain)."
    )
    workers: int | None = Field(
        None, ge=0, description="Grain worker processes (default: half the cores, 1-4, for folder/tfds; 0 = threads for npz)."
    )
    prefetch: int = Field(2, ge=1, description="Streamed batches read ahead per worker, and put on the device ahead.")
    augment: list[AugmentOp] = Field(default_factory=list, description="Ordered augmentation ops.")
    allow_missing_classes: bool = Field(
        False, description="Train even when a class has no training example (a warning lists them) instead of failing."
    )
    mnist1d: Mnist1dConfig | None = Field(None, description='make_dataset arguments (source = "mnist1d" only).')

    @field_validator("source")
    @classmethod
    def _source_kind(cls, value: str) -> str:
        DataSource.parse(value)  # ValueError: unknown kind, or a missing name or path
        return value

    @field_validator("image_size")
    @classmethod
    def _sides(cls, value: int | list[int] | None) -> int | list[int] | None:
        if isinstance(value, list) and len(value) != 2:
            raise ValueError(f"give one side (32) or [height, width], got {value}")
        if value is not None and min([value] if isinstance(value, int) else value) < 1:
            raise ValueError(f"sides must be at least 1 pixel, got {value}")
        return value

    @field_validator("channels")
    @classmethod
    def _channel_count(cls, value: int | None) -> int | None:
        if value is not None and value not in (1, 3, 4):  # what folder: and tfds: convert to (Pillow's L, RGB, RGBA)
            raise ValueError(f"images have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {value}")
        return value

    @model_validator(mode="after")
    def _mnist1d_only_with_its_source(self) -> DataConfig:
        if self.mnist1d is not None and DataSource.parse(self.source).kind != "mnist1d":
            raise ValueError('data.mnist1d is read only with source = "mnist1d"; remove the [data.mnist1d] table')
        return self

    @property
    def source_spec(self) -> DataSource:
        """``source`` parsed into its kind and its name or path (validated: never raises)."""
        return DataSource.parse(self.source)


class ModelConfig(_Strict):
    """``[model]``: layer tokens, or a zoo architecture by name."""

    layers: list[str] | None = Field(None, description="Layer tokens, e.g. conv:c=32,k=3,p=same.")
    arch: str | None = Field(None, description="Zoo architecture name, e.g. resnet20.")
    num_classes: int | None = Field(None, ge=2, description="Classifier width (default: from the data).")

    @field_validator("layers")
    @classmethod
    def _tokens_parse(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            from cnncli.config.specs import parse_tokens

            try:
                parse_tokens(tuple(value))  # kept: the model builder reuses this parse
            except LayerError as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("arch")
    @classmethod
    def _arch_known(cls, value: str | None) -> str | None:
        if value is not None:
            from cnncli.arith import zoo
            from cnncli.errors import CnnCliError

            try:
                zoo.tokens(value)
            except CnnCliError as err:
                raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ModelConfig:
        if (self.layers is None) == (self.arch is None):
            raise ValueError("give exactly one of model.layers or model.arch")
        return self


class OptimizerConfig(_Strict):
    """``[optimizer]``: an optax optimizer; weight decay skips biases and norm scales."""

    name: Literal[OPTIMIZERS] = Field("adamw", description="Optimizer name.")  # type: ignore[valid-type]
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled for adamw/lion, L2 otherwise.")
    momentum: float = Field(0.9, ge=0, lt=1, description="For momentum/nesterov/rmsprop.")
    b1: float = Field(0.9, ge=0, lt=1, description="Adam-family first-moment decay.")
    b2: float = Field(0.999, ge=0, lt=1, description="Adam-family second-moment decay.")
    eps: float = Field(1e-8, gt=0, description="Adam-family epsilon.")
    clip_norm: float | None = Field(None, gt=0, description="Clip gradients to this global norm.")


class ScheduleConfig(_Strict):
    """``[schedule]``: the learning-rate schedule, in epochs (converted to steps)."""

    name: Literal[SCHEDULES] = Field("constant", description="Schedule name.")  # type: ignore[valid-type]
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warmup from 0, in epochs.")
    step_epochs: float = Field(10.0, gt=0, description="step: decay every this many epochs.")
    milestones: list[float] = Field(default_factory=list, description="multistep: epochs to decay at.")
    gamma: float = Field(0.1, gt=0, description="step/multistep/exponential decay factor.")
    final_lr_fraction: float = Field(0.0, ge=0, le=1, description="cosine: end at this fraction.")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(later <= earlier for earlier, later in zip(value, value[1:])):
            raise ValueError(f"milestones must be increasing epochs, e.g. {sorted(set(value))}")
        return value


class MeshConfig(_Strict):
    """``[train] mesh``: how devices are arranged (default: all on the batch axis)."""

    data: int | None = Field(None, ge=1, description="Devices along the batch axis (default: all / model).")
    model: int = Field(1, ge=1, description="Devices along the model axis (dense kernels split along it).")


class TrainConfig(_Strict):
    """``[train]``: how long and how; one seed drives everything."""

    epochs: int | None = Field(None, ge=1, description="Number of epochs (or give steps).")
    steps: int | None = Field(None, ge=1, description="Number of updates (or give epochs).")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Drives init, shuffling, augmentation and dropout (0 to 2**32 - 1)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing factor.")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="Keep an EMA of the weights.")
    early_stopping: int | None = Field(None, ge=1, description="Stop after N epochs without improvement.")
    freeze: list[str] = Field(default_factory=list, description="Globs of layer names not to train.")
    log_every: int = Field(0, ge=0, description="Steps between progress updates (0: auto).")
    eval_every: int = Field(1, ge=1, description="Evaluate every N epochs.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files into the run directory's tb/.")
    tb_images: bool = Field(
        False, description="Also log first-layer filters and the eval confusion matrix as TensorBoard images."
    )
    keep: int = Field(2, ge=1, description="Keep the last N checkpoints (plus the best).")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="Also checkpoint every N steps (mid-epoch).")
    checkpoint_every_minutes: float | None = Field(
        None, gt=0, description="Also checkpoint when this many minutes passed since the last checkpoint."
    )
    fsync: bool = Field(False, description="Flush checkpoints to disk before commit: survive power loss (slower).")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="Compute precision.")
    conv_backend: Literal["xla", "onednn", "auto"] = Field(
        "auto",
        description="Convolution kernels of the train step: auto (the default: onednn on one CPU "
        "device where oneDNN and g++ are found, else xla, with the reason in the summary), xla "
        "(built in), or onednn (CPU, one device; an error where it cannot run).",
    )
    mesh: MeshConfig = Field(default_factory=MeshConfig, description="Device mesh, e.g. {data = 4, model = 2}.")

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_in_range(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_SEED:
            raise ValueError(f"seeds run from 0 to {MAX_SEED} (2**32 - 1): a JAX key keeps 32 bits of the seed, "
                             f"so {value} would train as seed {value % 2**32}")  # fmt: skip
        return value

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.epochs is None and self.steps is None:
            raise ValueError("give train.epochs or train.steps")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give train.epochs or train.steps, not both")
        return self


def _has(data: Any, loc: tuple) -> bool:
    """Whether plain data (a recipe as read) holds something at the key path ``loc``."""
    for key in loc:
        in_list = isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data)
        if not (in_list or isinstance(data, dict) and key in data):
            return False
        data = data[key]
    return True


@dataclass(frozen=True)
class Origin:
    """Where a recipe came from: its file, the text read from it, and the ``--set`` overrides applied.

    A problem found after validation (by the dry run, by the data) is reported where the
    user can fix it: the ``--set`` that set the key, else the file and line.
    """

    source: str = ""
    text: str = ""
    overrides: tuple[str, ...] = ()
    given: Any = field(default=None, compare=False, repr=False)  # the file's data before the ``--set``s, if known

    def override_of(self, loc: tuple, message: str = "") -> str | None:
        """The last ``--set`` that set the key path ``loc`` (or a table above it, or is named in ``message``).

        A ``--set`` below ``loc`` is blamed too when the file has nothing at ``loc``: the ``--set``
        made that table (``--set nosuch.key=1`` is an unknown key `nosuch`; ``--set
        data.augment.0.op=flip_lr`` makes `data.augment` a table, not a list), or made a table
        the message names (``--set data.mnist1d.seed=1``: "data.mnist1d is read only with ...").
        """
        keys = [str(k) for k in loc if not isinstance(k, int)]
        for item in reversed(self.overrides):
            key = item.partition("=")[0].strip()
            path = [k.strip() for k in key.split(".")]
            if keys and keys[: len(path)] == path or (message and f"{key}" in message and len(keys) < len(path)):
                return item
            if keys and path[: len(keys)] == keys and not _has(self.given, loc):
                return item
            made = (path[:n] for n in range(len(keys) + 1, len(path)))  # tables the --set made, named in the message
            if message and any(".".join(p) in message and not _has(self.given, tuple(p)) for p in made):
                return item
        return None

    def where(self, loc: tuple, message: str = "") -> str:
        """``--set KEY=VALUE``, ``FILE:LINE``, ``FILE``, or "" (a recipe not read from a file)."""
        item = self.override_of(loc, message)
        if item is not None:
            return f"--set {item}"
        line = _line_of(self.text, loc)
        return f"{self.source}:{line}" if line and self.source else self.source

    def error(self, problems: list[tuple[tuple, str]], hint: str | None = None) -> RecipeError:
        """One error listing every ``(loc, message)`` problem, each with `where`; exit 2 when all are ``--set``'s."""
        lines = []
        for loc, message in problems:
            where = self.where(loc, message)
            lines.append(f"{where}: {message}" if where else message)
        blamed = all(self.override_of(loc, message) for loc, message in problems)
        return (OverrideError if blamed and problems else RecipeError)("\n".join(lines), hint=hint)


class Recipe(_Strict):
    """A complete training recipe."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig
    _origin: Origin | None = PrivateAttr(None)  # set by `read_recipe`; never saved, never part of the digest

    @property
    def origin(self) -> Origin:
        """The file, text and ``--set``s this recipe was read from (empty when built otherwise)."""
        return self._origin or Origin()

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe (defaults filled in) as plain data."""
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """sha256 of the resolved trajectory fields (`cnncli.config.trajectory`): equal digests, same trajectory."""
        from cnncli.config.trajectory import trajectory_part

        return hashlib.sha256(json.dumps(trajectory_part(self.to_dict()), sort_keys=True).encode()).hexdigest()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of recipes, for editors (``recipes/recipe.schema.json``)."""
    schema = Recipe.model_json_schema()
    schema["title"] = "cnncli recipe"
    return schema


# --------------------------------------------------------------------- loading


def _read(path: Path) -> tuple[dict[str, Any], str]:
    if not path.exists():
        raise RecipeError(f"{path}: recipe file not found", hint="check the path; recipes/ has examples")
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file", hint="pass a .toml or .yaml file in it")
    text = read_text(path, RecipeError)  # a BOM accepted; a byte that is not UTF-8 named by line
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text), text
        if suffix in (".yaml", ".yml"):
            data = _yaml_load(text, path)  # safe: a recipe can never execute code; duplicate keys refused
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise RecipeError(f"{path}: a recipe must be a mapping of tables, got {type(data).__name__}")
            return data, text
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML: {err}") from None
    except RecipeError:
        raise
    except Exception as err:  # yaml.YAMLError and kin
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    raise RecipeError(f"{path}: unknown recipe format {suffix!r}", hint="use a .toml or .yaml file")


class OverrideError(RecipeError):
    """A ``--set`` that is malformed or sets a value the schema refuses: a usage error (exit 2)."""

    exit_code = 2


def _yaml_load(text: str, path: Path) -> Any:
    """``yaml.safe_load``, refusing a key given twice in one mapping (YAML would keep the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Loader, node: yaml.MappingNode) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise RecipeError(f"{path}:{line}: key {key!r} is given twice (also on line {seen[key]})",
                                  hint="keep one of them: YAML would silently use the last")  # fmt: skip
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    loader = Loader(text)  # a SafeLoader subclass: what yaml.safe_load does, with the duplicate check
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value``; the value is read as TOML (``3``, ``0.1``, ``"x"``, ``[1,2]``)."""
    key, eq, text = item.partition("=")
    if not eq or not all(part.strip() for part in key.split(".")):
        raise OverrideError(f"--set {item!r}: expected KEY.PATH=VALUE", hint="e.g. --set train.epochs=3")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is a string: --set data.source=digits
    return [k.strip() for k in key.strip().split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``--set key.path=value`` applied (``=null`` removes the key)."""
    data = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise OverrideError(f"--set {item!r}: {key!r} is not a table")
            node = child
        if value == "null":  # --set train.epochs=null removes the key (TOML has no null)
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    section = data.get("data")
    if not isinstance(section, dict):
        return data
    source = section.get("source")
    if isinstance(source, str):
        section["source"] = resolve_source(source, base)
    data_dir = section.get("data_dir")
    if isinstance(data_dir, str) and not Path(data_dir).expanduser().is_absolute():
        section["data_dir"] = str((base / data_dir).resolve())
    return data


def _line_of(text: str, loc: tuple) -> int | None:
    """Best-effort line number of a key path in TOML/YAML text (1-based)."""
    if not text or not loc:
        return None
    lines = text.splitlines()
    if len(loc) >= 3 and isinstance(loc[2], int):  # an array of tables: the loc[2]-th [[data.augment]]
        header = re.compile(rf"^\s*\[\[{re.escape(str(loc[0]))}\.{re.escape(str(loc[1]))}\]\]")
        heads = [i for i, line in enumerate(lines) if header.match(line)]
        if loc[2] < len(heads):
            first = heads[loc[2]]
            end = next((i for i in range(first + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
            key = re.compile(rf"^\s*(\"?){re.escape(str(loc[3]))}\1\s*=") if len(loc) > 3 else None
            return next((i + 1 for i in range(first, end) if key and key.match(lines[i])), first + 1)
        return _line_of(text, loc[:2])  # an inline array: the line of its key
    start = 0
    section = str(loc[0])
    for i, line in enumerate(lines):  # find the table header or YAML top-level key
        if re.match(rf"^\s*\[{re.escape(section)}\]\s*(#.*)?$", line) or re.match(
            rf"^{re.escape(section)}\s*:", line
        ):
            start = i
            break
    else:
        if len(loc) == 1:
            return None
    key = str(loc[-1]) if not isinstance(loc[-1], int) else str(loc[-2])
    pattern = re.compile(rf"^\s*(\"?){re.escape(key)}\1\s*[=:]")
    for i in range(start, len(lines)):
        if pattern.match(lines[i]):
            return i + 1
    return start + 1 if start else None


def _format_error(err: dict, model_cls: type[BaseModel]) -> tuple[tuple, str]:
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    path = ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        node: Any = model_cls
        for part in loc[:-1]:
            if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
                node = node.model_fields[part].annotation
                # an optional table (`Mnist1dConfig | None`): its model
                node = next((a for a in getattr(node, "__args__", ()) if isinstance(a, type)
                             and issubclass(a, BaseModel)), node)  # fmt: skip
        valid = list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []
        guess = did_you_mean(str(loc[-1]), valid)
        msg = f"`{path}`: unknown key"
        msg += f"; did you mean `{guess}`?" if guess else (f" (valid: {', '.join(valid)})" if valid else "")
        return loc, msg
    if err["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", err["ctx"]["expected"])
        guess = did_you_mean(str(err["input"]), choices)
        hint = f"; did you mean {guess!r}?" if guess else ""
        return loc, f"`{path}`: unknown value {err['input']!r}{hint} (valid: {', '.join(choices)})"
    if err["type"] == "missing":
        return loc, f"`{path}`: required key is missing"
    if err["type"] == "finite_number":  # the wording of `cnncli.train.plan.nonfinite_problems`
        named = ".".join(str(k) for k in loc if not isinstance(k, int)) + "".join(f"[{k}]" for k in loc
                                                                                  if isinstance(k, int))  # fmt: skip
        return loc, f"`{named}` = {err['input']}: give a finite number (or leave the key out for its default)"
    message = err["msg"].removeprefix("Value error, ")
    if path:
        value = err.get("input")
        shown = "" if isinstance(value, (dict, list)) or value is None or repr(value) in message else f" (got {value!r})"
        return loc, f"`{path}`: {message}{shown}"
    return loc, message


def validate(
    data: dict[str, Any], *, source: str = "<recipe>", text: str = "", overrides: tuple[str, ...] = (),
    given: dict[str, Any] | None = None,
) -> Recipe:  # fmt: skip
    """Validate plain data as a `Recipe`, raising one `RecipeError` listing every problem.

    A problem a ``--set`` (in ``overrides``) caused names that ``--set``, not a line of the
    file; when every problem is such, the error is an `OverrideError` (a usage error, exit 2).
    ``given`` is the file's data before the overrides (see `Origin.override_of`).
    """
    origin = Origin(source, text, tuple(overrides), given)
    try:
        recipe = Recipe.model_validate(data)
    except pydantic.ValidationError as exc:
        raise origin.error([_format_error(err, Recipe) for err in exc.errors()]) from None
    recipe._origin = origin
    return recipe


@dataclass(frozen=True)
class RecipeFile:
    """A recipe as loaded, with the text it was read from (a run saves that copy as given)."""

    recipe: Recipe
    text: str
    path: Path

    @property
    def suffix(self) -> str:
        """``.toml``, ``.yaml`` or ``.yml``: the saved copy's."""
        return self.path.suffix.lower()


def read_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeFile:
    """Load, override and validate a recipe file, keeping the text it read (the file is read once).

    Args:
        path: a ``.toml`` or ``.yaml`` recipe.
        overrides: ``key.path=value`` strings (``--set``), applied before validation.

    Returns:
        The validated `Recipe` (relative paths resolved against the recipe's folder) and the text.

    Raises:
        RecipeError: naming the file, key path, line and the closest valid key.
    """
    path = Path(path)
    given, text = _read(path)
    data = apply_overrides(given, overrides or [])
    data = _resolve_paths(data, path.resolve().parent)
    recipe = validate(data, source=str(path), text=text, overrides=tuple(overrides or ()), given=given)
    return RecipeFile(recipe, text, path)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """The validated `Recipe` of a file (`read_recipe` without the text)."""
    return read_recipe(path, overrides).recipe


if __name__ == "__main__":  # regenerate recipes/recipe.schema.json: python -m cnncli.config.recipe
    print(json.dumps(json_schema(), indent=2))
