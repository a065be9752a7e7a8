"""One error contract for every command: a missing input is one line on stderr naming it, exit 2."""

from __future__ import annotations

import pytest

from gmd_monai.cli import _COMMANDS, main

MISSING = "no_such_input"
#: every command that reads an input, with that input missing
CASES = {
    "segment": ["--t1ce", f"{MISSING}.nii.gz", "--output", "out/"],
    "segment_batch": [MISSING, "out/"],
    "evaluate": ["--datalist", f"{MISSING}.json"],
    "prepare_datalist": [MISSING],
    "sentiment_evaluate": ["--checkpoint", f"{MISSING}.pt", "--dataset_path", f"{MISSING}.pkl"],
    "plot_diagnostics": [MISSING],
    "zoo_bundle": ["--bundle", MISSING, "--output", "out/bundle.zip"],
}
#: commands without an input to miss (they create their data)
NO_INPUT = {"synthetic", "demo"}


def test_every_command_is_covered():
    assert set(CASES) | NO_INPUT == set(_COMMANDS)


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_missing_input_is_one_line_and_exit_2(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([command.replace("_", "-"), *CASES[command]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert MISSING in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError):
        main(["prepare-datalist", MISSING, "--debug"])
