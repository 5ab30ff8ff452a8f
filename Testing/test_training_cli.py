"""``python -m training``: plain-text help for every option, and errors as one
line with the exit status of their kind."""

from __future__ import annotations

import argparse

import pytest

from SuperResMoELib.core.errors import ExitCode
from training.__main__ import build_parser, main


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_plain_help() -> None:
    parsers = list(_parsers(build_parser()))
    assert {p.prog.split()[-1] for p in parsers} >= {"training", "sample-data", "ssmoe", "remix", "remix-figure",
                                                     "evaluate"}
    for p in parsers:
        assert p.description and "``" not in p.description, p.prog
        assert "``" not in (p.epilog or "")
        assert "``" not in p.format_help(), p.prog
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{p.prog}: {action.dest} has no help"
            assert "``" not in action.help
        for action in getattr(next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None),
                              "_choices_actions", []):
            assert action.help and "``" not in action.help, action.dest


@pytest.mark.parametrize("command", ["ssmoe", "remix"])
def test_training_commands_take_device_and_amp(command) -> None:
    extra = ["--task", "iso"] if command == "ssmoe" else []
    args = build_parser().parse_args([command, *extra])
    assert (args.device, args.amp) == ("auto", "auto")
    args = build_parser().parse_args([command, *extra, "--device", "cuda:1", "--amp", "fp16"])
    assert (args.device, args.amp) == ("cuda:1", "fp16")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *extra, "--amp", "fp32"])


@pytest.mark.parametrize("argv, code, message", [
    (["ssmoe", "--task", "aniso", "--config", "tiny"], ExitCode.CONFIG,
     "python -m training ssmoe: error: no ssmoe config 'tiny': not a file, nor one of compact, full, long, mixed, wide"),
    (["ssmoe", "--task", "aniso", "--data", "mudi:{tmp}/nowhere"], ExitCode.INPUT,
     "python -m training ssmoe: error: {tmp}/nowhere: Super MUDI folder not found"),
    (["ssmoe", "--task", "aniso", "--device", "cpu", "--amp", "fp16", "--data", "sample"], ExitCode.CONFIG,
     "python -m training ssmoe: error: --amp fp16 needs a CUDA device, not cpu; use bf16 or none"),
    (["remix", "--device", "tpu"], ExitCode.DEVICE,
     "python -m training remix: error: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    (["evaluate", "remix", "--checkpoints", "{tmp}/none", "--out", "{tmp}/out"], ExitCode.INPUT,
     "python -m training evaluate: error: checkpoint folder {tmp}/none not found"),
    (["evaluate", "ssmoe", "--checkpoints", "{tmp}", "--out", "{tmp}/out"], ExitCode.CONFIG,
     "python -m training evaluate: error: evaluate ssmoe needs --task aniso|iso"),
])
def test_errors_are_one_line_with_their_exit_code(tmp_path, monkeypatch, capsys, argv, code, message) -> None:
    """Each stops before any work: no run folder, no cache."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main([*argv, "--progress", "none"]) == code
    assert capsys.readouterr().err.splitlines() == [message.format(tmp=tmp_path)]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
