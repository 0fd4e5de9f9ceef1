"""The command-line style shared by vdt-bench's entry points.

``python -m vdt.train``, ``python metrics/evaluate.py``, ``python ablations/run.py`` and ``python metrics/report.py``
build their parsers with ``parser()``, take config overrides the same way (``add_config_args``: ``--set KEY=VALUE``
and ``--data NAME:ROOT``, turned into override strings by ``overrides``), and run through ``run``: an input error
(``vdt.errors.InputError``) prints ``error: <message>`` and exits 2, without a traceback; anything else is a bug and
keeps its traceback.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

from vdt.errors import ConfigError, InputError

CONFIG_KEYS = "config keys: the fields of vdt/config.py as section.field (model, diffusion, masks, data, train, eval)"
EXIT_INPUT_ERROR = 2


def parser(prog: str, description: str, examples: Sequence[str] = (), notes: str = "") -> argparse.ArgumentParser:
    """An ArgumentParser in the house style: what it does, then examples, then notes, formatting kept."""
    lines = (["examples:", *(f"  {e}" for e in examples)] if examples else []) + ([notes] if notes else [])
    epilog = "\n".join(lines)
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_args(p: argparse.ArgumentParser, what: str = "config overrides",
                    example: str = "model.depth=8 data.frames=16") -> None:
    """``--set KEY=VALUE ...`` (repeatable) and ``--data NAME:ROOT``, with the same help everywhere."""
    p.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                   help=f"{what}, e.g. --set {example} (repeatable; wins over --data)")
    p.add_argument("--data", metavar="NAME:ROOT",
                   help="dataset shortcut: ucf101:/data/UCF-101 = --set data.name=ucf101 data.root=/data/UCF-101 "
                        "(names: bouncing, ucf101, taichi, sky; see docs/data.md)")


def data_overrides(spec: str | None) -> list[str]:
    """``'ucf101:/data/ucf'`` -> ``['data.name=ucf101', 'data.root=/data/ucf']``; the root may be left out."""
    if spec is None:
        return []
    name, _, root = spec.partition(":")
    if not name.strip():
        raise ConfigError(f"--data {spec!r}: expected NAME:ROOT, for example ucf101:/data/UCF-101")
    return [f"data.name={name.strip()}"] + ([f"data.root={root}"] if root else [])


def overrides(args: argparse.Namespace) -> list[str]:
    """The override strings of ``--data`` then ``--set`` (so an explicit ``--set`` wins)."""
    return data_overrides(args.data) + [kv for group in args.set for kv in group]


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)``, with an input error printed as one line on stderr and exit status 2."""
    try:
        return main(argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR


def exit_with(main: Callable[[list[str] | None], int]) -> None:
    """``sys.exit(run(main))``: what each entry point's ``if __name__ == "__main__"`` calls."""
    sys.exit(run(main))
