"""Stage settings from the configuration. ``config.schema.yaml`` is the only home of every default and its doc.

Each stage declares a dataclass of the settings it uses, with types and no defaults; ``from_config`` fills it from
a config section (a Snakemake rule's params, already validated and defaulted by Snakemake) or, when called from
Python (tests, benchmarks), from the schema's defaults plus the values given, validated against the same schema::

    cfg = from_config(PPOConfig, "rlhf", {"total_steps": 8})

``tests/test_config_defaults.py`` checks that every dataclass field is a key of its section, every config key
reaches code, ``config.yaml`` restates only the schema's defaults, and no code (dataclass, signature,
``.get(key, fallback)``, rule, benchmark) writes a second default for a config key. Like ``paths``, this module
needs only the standard library, yaml and jsonschema (all Snakemake dependencies): ``rules/common.smk`` uses it at
parse time.

The whole configuration a run uses is built here once, for the workflow and for every script outside it
(benchmarks, tests): :func:`load_config` reads ``config.yaml`` with ``--configfile`` files merged over it as
Snakemake merges them, validates it and fills the defaults; :func:`checked_config` is the part the Snakefile runs
after Snakemake's own ``validate``.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from workflow_scripts.lib.paths import REPO_ROOT, SCHEMA_PATH

T = TypeVar("T")


@functools.cache
def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/definitions/...``), keeping the node's own keys (e.g. a ``default``)."""
    if "$ref" not in node:
        return node
    target: Any = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def section_schema(section: str) -> dict[str, Any]:
    """The schema of a dotted config section, e.g. ``rlhf`` or ``evaluation.rtp``, with references resolved."""
    root = load_schema()
    node = root
    for part in section.split("."):
        props = _resolve(node, root).get("properties", {})
        if part not in props:
            raise KeyError(f"config.schema.yaml has no section {section!r}")
        node = props[part]
    return {**_resolve(node, root), "definitions": root.get("definitions", {})}


def _fill_defaults(schema: dict[str, Any], value: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``value`` with the schema's defaults filled in at every level (what Snakemake's ``validate`` does)."""
    out = dict(value)
    for key, sub in _resolve(schema, root).get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and sub.get("type") == "object":
            out[key] = _fill_defaults(sub, out[key], root)
    return out


def fill_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The whole config with every schema default filled in, also those behind a ``$ref`` (the seeds), which
    Snakemake's ``validate`` leaves out."""
    root = load_schema()
    return _fill_defaults(root, config, root)


def schema_defaults(section: str) -> dict[str, Any]:
    """Every default of a config section (nested sections included)."""
    return _fill_defaults(section_schema(section), {}, load_schema())


def section_values(section: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``values`` over the section's defaults, validated against the section's schema (naming the bad key)."""
    schema = section_schema(section)
    merged = _fill_defaults(schema, dict(values or {}), load_schema())
    problem = schema_problem(schema, merged, section)
    if problem is not None:
        raise ValueError(problem)
    return merged


def schema_problem(schema: dict[str, Any], value: Any, *prefix: str) -> str | None:
    """The most relevant violation of ``schema`` by ``value`` as ``dotted.key: message``, the key's path after
    ``prefix`` (``None``: valid)."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = ".".join([*prefix, *map(str, error.absolute_path)]) or "(top level)"
    return f"{where}: {error.message}"


def from_config(cls: type[T], section: str, values: Mapping[str, Any] | None = None, **job: Any) -> T:
    """Build stage settings ``cls`` from config section ``section``: ``values`` over the schema's defaults, plus
    ``job`` values a rule supplies (e.g. a seed from a wildcard). The section's other keys belong to other code (the
    rules, another stage) and are left out; a key in ``values`` that ``cls`` does not declare is an error."""
    assert is_dataclass(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values or {}) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: key(s) {unknown} of {section!r} are not settings of this stage")
    merged = {**section_values(section, values), **job}
    missing = sorted(n for n in names if n not in merged)
    if missing:
        raise ValueError(f"{cls.__name__}: no value for {missing} (not in {section!r} and no schema default)")
    return cls(**{n: merged[n] for n in names})


# ============================================================================================ the whole config
class ConfigError(ValueError):
    """A configuration that cannot run; the message lists every problem, each naming its keys."""


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, section by section (how Snakemake merges ``--configfile`` over ``configfile``)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def validate(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first key that breaks the schema."""
    problem = schema_problem(load_schema(), config)
    if problem is not None:
        raise ConfigError(f"invalid configuration: {problem}")


def checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-valid config with every default filled in (also those behind a ``$ref``, which Snakemake's
    ``validate`` leaves out) and ``irl_rlhf.ppo`` checked over ``rlhf``; raises :class:`ConfigError` listing every
    problem between keys."""
    config = fill_defaults(dict(config))
    raise_problems(config_problems(config))
    irl_rlhf_ppo(config)
    return config


def load_config(*configfiles: str | Path) -> dict[str, Any]:
    """The configuration of ``snakemake [--configfile F ...]``: ``config.yaml`` with each file merged over it in
    order, validated against the schema, defaults filled, checked across keys. A renamed or moved key fails here."""
    config: dict[str, Any] = {}
    for path in (REPO_ROOT / "config.yaml", *map(Path, configfiles)):
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate(config)
    return checked_config(config)


def irl_rlhf_ppo(config: Mapping[str, Any]) -> dict[str, Any]:
    """IRL-RLHF's PPO section: ``rlhf`` with ``irl_rlhf.ppo``'s overrides (which carry no defaults), validated like
    ``rlhf`` itself; ``reward_text`` is the GT reward's key, not PPO's, and may not be overridden."""
    rlhf = section_schema("rlhf")["properties"]
    overrides = config["irl_rlhf"]["ppo"]
    unknown = sorted(k for k in overrides if k not in rlhf or k == "reward_text")
    if unknown:
        raise ConfigError(
            f"irl_rlhf.ppo: unknown PPO key(s) {unknown}; allowed: the keys of rlhf except reward_text (IRL-RLHF's"
            " reward is the learned one)"
        )
    merged = {**config["rlhf"], **overrides}
    problem = schema_problem(section_schema("rlhf"), merged, "irl_rlhf", "ppo")
    if problem is not None:
        raise ConfigError(problem)
    raise_problems(ppo_problems(merged, "irl_rlhf.ppo (over rlhf)"))
    return merged


# ============================================================================================ checks across keys
def non_finite(value: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of every NaN or infinite number in a config (YAML ``.nan``/``.inf`` pass the schema's bounds)."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from non_finite(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from non_finite(sub, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield path


def ppo_problems(ppo: Mapping[str, Any], where: str) -> list[str]:
    """Constraints between PPO keys that a PPO job would otherwise enforce only when it starts."""
    problems = []
    if ppo["num_rollouts"] % ppo["batch_size"]:
        problems.append(
            f"{where}.num_rollouts ({ppo['num_rollouts']}) must be a multiple of {where}.batch_size "
            f"({ppo['batch_size']}): every rollout joins one minibatch"
        )
    return problems


def demonstration_problems(demos: Mapping[str, Any]) -> list[str]:
    """Constraints between demonstrations keys."""
    if not demos["greedy"] and demos["samples"] == 0:
        return ["demonstrations.greedy is false and demonstrations.samples is 0: there would be no pairs"]
    return []


def raise_problems(problems: list[str]) -> None:
    """Raise :class:`ConfigError` listing ``problems`` (each names its keys); nothing when there are none."""
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a schema-valid, defaulted config that no single key's schema can express, each problem
    naming its keys; ``rules/common.smk`` stops on them before any job (``[]``: nothing wrong)."""
    problems = [f"{path}: {_value_at(config, path)} is not a finite number" for path in non_finite(config)]
    problems += ppo_problems(config["rlhf"], "rlhf")
    problems += demonstration_problems(config["demonstrations"])
    sft, base = config["sft"], config["base_model"]
    if sft["source"] == "import" and not sft["import_from"]:
        problems.append("sft.source is 'import' but sft.import_from is empty")
    if base["source"] == "pretrained" and not base["name_or_path"]:
        problems.append("base_model.source is 'pretrained' but base_model.name_or_path is empty")
    if base["source"] == "gguf_wheel" and not (base["wheel"] and base["gguf_file"]):
        problems.append("base_model.source gguf_wheel needs base_model.wheel and base_model.gguf_file")
    irl, choice = config["irl"], config["irl_rlhf"]
    if choice["objective"] not in irl["objectives"]:
        problems.append(f"irl_rlhf.objective={choice['objective']!r} is not among irl.objectives {irl['objectives']}")
    if choice["seed"] is not None and choice["seed"] not in irl["seeds"]:
        problems.append(f"irl_rlhf.seed={choice['seed']} is not among irl.seeds {irl['seeds']}")
    return problems


def _value_at(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.replace("[", ".").replace("]", "").split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node
