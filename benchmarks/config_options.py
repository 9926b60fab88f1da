"""Benchmark options whose defaults are configuration values, read through the pipeline's own loader.

A benchmark that runs a pipeline setting (PPO hyper-parameters, generation lengths, the prompt cut) takes
``--config FILE ...`` (configfiles merged over ``config.yaml`` as ``snakemake --configfile`` merges them; none: the
default run) and gives each such option the value of its config key as default, so nothing restates a config value
and a moved or renamed key fails loudly (``workflow_scripts.lib.config.load_config`` validates the whole config, and
:func:`add_config_option` indexes the key directly). The help text names the key and its value.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from machine import REPO  # noqa: F401  (benchmarks/machine.py: puts the repository root on sys.path)

from workflow_scripts.lib.config import load_config

CONFIG_HELP = (
    "configfiles merged over config.yaml in order, as snakemake --configfile does (default: config.yaml alone); "
    "options marked [config] take their defaults from it"
)


def load_config_option(argv: Sequence[str] | None) -> tuple[list[str], dict[str, Any]]:
    """``--config`` from the command line (parsed ahead of the other options, which need it for their defaults) and
    the configuration it names."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", nargs="+", default=[])
    known, _ = pre.parse_known_args(argv)
    return known.config, load_config(*known.config)


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """The value of a dotted key, e.g. ``rlhf.num_rollouts`` or ``rlhf.seeds.0`` (a list item; a missing key is a
    ``KeyError`` naming it)."""
    node: Any = config
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def add_config_option(
    parser: argparse.ArgumentParser,
    config: Mapping[str, Any],
    flag: str,
    key: str,
    type: Callable[[str], Any],
    help: str = "",
) -> None:
    """``flag`` defaulting to the config's ``key``; the help says so."""
    default = config_value(config, key)
    text = f"{help}; " if help else ""
    parser.add_argument(flag, type=type, default=default, help=f"{text}[config] default: {key} = {default}")
