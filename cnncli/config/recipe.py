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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cnncli.config.source import DataSource, resolve_source
from cnncli.errors import LayerError, RecipeError, did_you_mean

OPTIMIZERS = (
    "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "adadelta",
    "lamb", "lion", "nadam", "radam",
)  # fmt: skip
SCHEDULES = ("constant", "step", "multistep", "cosine", "warmup_cosine", "onecycle", "exponential")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AugmentOp(BaseModel):
    """One augmentation op: ``op`` and its arguments (checked by the data module)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    op: str = Field(description="Augmentation op name, e.g. flip_lr, random_crop.")


class DataConfig(_Strict):
    """``[data]``: where examples come from and how they are batched."""

    source: str = Field(
        "digits",
        description='"digits" (bundled, offline) | "npz:PATH" | "tfds:NAME" | "folder:PATH"',
    )
    batch_size: int = Field(64, ge=1, description="Training batch size (global, all devices).")
    eval_batch_size: int = Field(256, ge=1, description="Batch size for evaluation.")
    train_split: str = Field("train", description="Split used for training.")
    eval_split: str = Field("test", description="Split evaluated after each epoch.")
    normalize: bool = Field(True, description="Standardize inputs with per-channel train statistics.")
    data_dir: str | None = Field(None, description="TFDS data directory (default: TFDS's own).")
    image_size: int | list[int] | None = Field(None, description="Resize images to this size (folders).")
    channels: int | None = Field(None, ge=1, description="Convert images to this many channels.")
    image_key: str | None = Field(None, description="TFDS feature holding the image.")
    label_key: str | None = Field(None, description="TFDS feature holding the label.")
    strict: bool = Field(False, description="Fail on unreadable image files instead of skipping them.")
    memory_budget_mb: int = Field(2048, ge=1, description="Load datasets up to this size into memory.")
    augment: list[AugmentOp] = Field(default_factory=list, description="Ordered augmentation ops.")

    @field_validator("source")
    @classmethod
    def _source_kind(cls, value: str) -> str:
        DataSource.parse(value)  # ValueError: unknown kind, or a missing name or path
        return value

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


class MeshConfig(_Strict):
    """``[train] mesh``: how devices are arranged (default: all on the batch axis)."""

    data: int | None = Field(None, ge=1, description="Devices along the batch axis (default: all / model).")
    model: int = Field(1, ge=1, description="Devices along the model axis (dense kernels split along it).")


class TrainConfig(_Strict):
    """``[train]``: how long and how; one seed drives everything."""

    epochs: int | None = Field(None, ge=1, description="Number of epochs (or give steps).")
    steps: int | None = Field(None, ge=1, description="Number of updates (or give epochs).")
    seed: int = Field(0, description="Drives init, shuffling, augmentation and dropout.")
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
        "xla",
        description="Convolution kernels of the train step: xla (built in), onednn "
        "(CPU, one device; needs the optional onednn extra and g++), or auto (onednn where it "
        "can run, else xla).",
    )
    mesh: MeshConfig = Field(default_factory=MeshConfig, description="Device mesh, e.g. {data = 4, model = 2}.")

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.epochs is None and self.steps is None:
            raise ValueError("give train.epochs or train.steps")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give train.epochs or train.steps, not both")
        return self


class Recipe(_Strict):
    """A complete training recipe."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig

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
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text), text
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)  # safe: a recipe can never execute code
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


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value``; the value is read as TOML (``3``, ``0.1``, ``"x"``, ``[1,2]``)."""
    key, eq, text = item.partition("=")
    if not eq or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE", hint="e.g. --set train.epochs=3")
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
                raise RecipeError(f"--set {item!r}: {key!r} is not a table")
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
    message = err["msg"].removeprefix("Value error, ")
    if path:
        value = err.get("input")
        shown = "" if isinstance(value, (dict, list)) or value is None or repr(value) in message else f" (got {value!r})"
        return loc, f"`{path}`: {message}{shown}"
    return loc, message


def validate(data: dict[str, Any], *, source: str = "<recipe>", text: str = "") -> Recipe:
    """Validate plain data as a `Recipe`, raising one `RecipeError` listing every problem."""
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc, msg = _format_error(err, Recipe)
            line = _line_of(text, loc)
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {msg}")
        raise RecipeError("\n".join(lines)) from None


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
    data, text = _read(path)
    data = apply_overrides(data, overrides or [])
    data = _resolve_paths(data, path.resolve().parent)
    return RecipeFile(validate(data, source=str(path), text=text), text, path)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """The validated `Recipe` of a file (`read_recipe` without the text)."""
    return read_recipe(path, overrides).recipe


if __name__ == "__main__":  # regenerate recipes/recipe.schema.json: python -m cnncli.config.recipe
    print(json.dumps(json_schema(), indent=2))
