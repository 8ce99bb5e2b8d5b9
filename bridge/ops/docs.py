"""Operator documentation generated from the code, so that it cannot drift from it.

* ``docs/configuration.md``: every setting of :class:`bridge.config.Settings` with its type,
  default, environment variable and description;
* the metrics table in ``docs/operations.md`` (between ``<!-- BEGIN generated: metrics -->`` and
  ``<!-- END generated: metrics -->``), from :data:`bridge.ops.metric_table.METRICS`.

``python -m bridge.ops.docs --write`` regenerates both; ``--check`` exits 1 if either is stale
(the test suite does the same check).
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bridge.config import EvseId, OperatorId, Settings
from bridge.ops.metric_table import METRICS
from bridge.status.table import OcppStatus, OicpStatus

__all__ = [
    "METRICS_BEGIN",
    "METRICS_END",
    "config_reference",
    "env_name",
    "leaf_fields",
    "main",
    "metrics_table",
    "stale",
    "with_metrics",
]

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "configuration.md"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
METRICS_BEGIN = "<!-- BEGIN generated: metrics (python -m bridge.ops.docs --write) -->"
METRICS_END = "<!-- END generated: metrics -->"

# Types whose name says more than their Python type.
_VALIDATED = {
    id(typing.get_args(EvseId)[1]): "OICP EvseID",
    id(typing.get_args(OperatorId)[1]): "OICP OperatorID",
}
_ENUM_NAMES: dict[type[enum.Enum], str] = {OcppStatus: "OCPP status", OicpStatus: "OICP status"}

ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))
ENV_NESTING = str(Settings.model_config.get("env_nested_delimiter", "__"))

_INTRO = f"""\
# Configuration reference

<!-- Generated from bridge/config/ by `python -m bridge.ops.docs --write`; do not edit. -->

The bridge reads one YAML file (`oicp-bridge run --config FILE`; in the container image
`/etc/bridge/bridge.yaml`) and then the environment: every setting can be overridden by the
variable in the *Environment* column, which wins over the file. Mappings and lists are given as
JSON in the environment. A bad value stops the bridge with exit status 2 and a message naming
the setting; `oicp-bridge check-config --config FILE` runs the same checks without starting it.
`config/bridge.example.yaml` is a commented example.

Names are `section.setting` as in the YAML file; the environment variable is
`{ENV_PREFIX}` + `SECTION{ENV_NESTING}SETTING` in upper case.
"""


# -- configuration reference -------------------------------------------------------------------
def env_name(*path: str) -> str:
    return ENV_PREFIX + ENV_NESTING.join(p.upper() for p in path)


def config_reference() -> str:
    """The whole ``docs/configuration.md``."""
    out = [_INTRO]
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out.append(_section(name, model))
    out.append(_registry_section())
    return "\n".join(out)


def _section(name: str, model: type[BaseModel]) -> str:
    lines = [f"## `{name}`", "", _doc(model), "", *_table_head()]
    for path, field in leaf_fields(model, (name,)):
        lines.append(_row(".".join(path), env_name(*path), field))
    return "\n".join(lines) + "\n"


def leaf_fields(
    model: type[BaseModel], prefix: tuple[str, ...]
) -> list[tuple[tuple[str, ...], FieldInfo]]:
    """Every setting below ``model`` as (path, field); nested models are walked, not listed."""
    out: list[tuple[tuple[str, ...], FieldInfo]] = []
    for name, field in model.model_fields.items():
        inner, _ = _strip_none(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out.extend(leaf_fields(inner, (*prefix, name)))
        else:
            out.append(((*prefix, name), field))
    return out


def _registry_section() -> str:
    field = Settings.model_fields["chargers"]
    charger_model = _dict_value_model(field.annotation)
    lines = [
        "## `chargers`",
        "",
        _sentence(field.description or ""),
        "",
        f"Default: {_default(field)}. Environment: the whole registry as JSON in "
        f"`{env_name('chargers')}`, e.g. "
        '`{"CP-0001": {"evses": {"1": "DE*ABC*E0001*1"}}}`, or one setting of one charger '
        f"as `{env_name('chargers', '<ID>', '<SETTING>')}`; both merge with the file.",
        "",
        *_table_head(),
    ]
    for path, sub in leaf_fields(charger_model, ("chargers", "<charge point ID>")):
        env = env_name("chargers", "<ID>", *path[2:])
        lines.append(_row(".".join(path), env, sub))
    lines += [
        "",
        "Checked at start: every EvseID matches the OICP pattern and carries the operator's "
        "prefix (`oicp.operator_id`), and no EvseID belongs to two chargers.",
    ]
    return "\n".join(lines) + "\n"


def _dict_value_model(annotation: Any) -> type[BaseModel]:
    args = typing.get_args(annotation)
    model = args[1] if len(args) == 2 else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"chargers must be dict[str, <model>], not {annotation!r}")
    return model


def _table_head() -> list[str]:
    return [
        "| Setting | Type | Default | Environment | Description |",
        "|---|---|---|---|---|",
    ]


def _row(name: str, env: str, field: FieldInfo) -> str:
    env_cell = f"`{env}`" + (" (JSON)" if _is_json(field) else "")
    cells = [f"`{name}`", _type(field), _default(field), env_cell, field.description or ""]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc(model: type[BaseModel]) -> str:
    return _sentence((model.__doc__ or "").strip())


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text.endswith(".") else text + "."


def _is_json(field: FieldInfo) -> bool:
    origin = typing.get_origin(_strip_none(field.annotation)[0])
    return origin in (dict, list, tuple, set)


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
            return inner, True
    return annotation, False


def _type(field: FieldInfo) -> str:
    inner, nullable = _strip_none(field.annotation)
    named = [_VALIDATED[id(m)] for m in field.metadata if id(m) in _VALIDATED]
    text = named[0] if named else _type_name(inner, top=True)
    limits = _limits(field)
    if limits:
        text += f" ({limits})"
    return text + (" or `null`" if nullable else "")


def _type_name(annotation: Any, *, top: bool = False) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        named = [_VALIDATED[id(m)] for m in extra if id(m) in _VALIDATED]
        return named[0] if named else _type_name(base, top=top)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"mapping {_type_name(key)} → {_type_name(value)}"
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "list of {" + ", ".join(item.model_fields) + "}"
        return f"list of {_type_name(item, top=True)}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if top:
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        return _ENUM_NAMES.get(annotation, annotation.__name__)
    simple = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "file path",
        SecretStr: "secret string",
        dt.time: "time of day `HH:MM`",
    }
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return str(annotation)


def _limits(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {_number(item.ge)}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {_number(item.gt)}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {_number(item.le)}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {_number(item.lt)}")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {item.max_length} characters")
    return ", ".join(words)


def _number(value: Any) -> str:
    if isinstance(value, int):
        return str(value)  # :g would print 1048576 as 1.04858e+06
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    factory = field.default_factory
    value = field.default if factory is None else factory()  # type: ignore[call-arg]
    return f"`{_yaml_value(value)}`"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, dt.time):
        return value.isoformat("minutes")
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, SecretStr):
        return "(secret)"
    return str(value)


# -- metrics table -------------------------------------------------------------------------------
def metrics_table() -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {_cell(m.help)} |")
    return "\n".join(lines)


def with_metrics(page: str) -> str:
    """``page`` (docs/operations.md) with the generated metrics table between the markers."""
    start, end = page.find(METRICS_BEGIN), page.find(METRICS_END)
    if start < 0 or end < start:
        raise ValueError(f"the page lacks the markers {METRICS_BEGIN!r} … {METRICS_END!r}")
    head = page[: start + len(METRICS_BEGIN)]
    return f"{head}\n{metrics_table()}\n{page[end:]}"


# -- command -------------------------------------------------------------------------------------
def stale() -> list[Path]:
    """The generated files that differ from what the code says now."""
    out = []
    if not CONFIG_DOC.is_file() or CONFIG_DOC.read_text(encoding="utf-8") != config_reference():
        out.append(CONFIG_DOC)
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    if with_metrics(text) != text:
        out.append(OPERATIONS_DOC)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.ops.docs",
        description="Regenerate (or check) the configuration reference and the metrics table.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the generated files")
    action.add_argument("--check", action="store_true", help="exit 1 if they are stale")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for path in old:
            print(f"{path.relative_to(ROOT)} is stale: run python -m bridge.ops.docs --write")
        return 1 if old else 0
    CONFIG_DOC.parent.mkdir(parents=True, exist_ok=True)
    CONFIG_DOC.write_text(config_reference(), encoding="utf-8")
    page = OPERATIONS_DOC.read_text(encoding="utf-8")
    OPERATIONS_DOC.write_text(with_metrics(page), encoding="utf-8")
    print(f"wrote {CONFIG_DOC.relative_to(ROOT)} and the metrics table in "
          f"{OPERATIONS_DOC.relative_to(ROOT)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
