"""The command line's error boundary: one line for what the user can fix, the full traceback on demand."""

from __future__ import annotations

import pytest
import torch

from gmim.cli import main, out_of_memory
from gmim.errors import InputError


def test_debug_shows_the_error_itself(tmp_path, monkeypatch, capsys):
    argv = ["predict", str(tmp_path / "no_run"), str(tmp_path), "--out", str(tmp_path / "out")]
    assert main(argv) == 2 and "no such model folder" in capsys.readouterr().err
    with pytest.raises(InputError, match="no such model folder"):
        main(["--debug", *argv])
    monkeypatch.setenv("GMIM_DEBUG", "1")
    with pytest.raises(InputError, match="no such model folder"):
        main(argv)


def test_out_of_memory_is_named_with_what_to_change():
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)  # PyTorch's own error, raised before anything is allocated
    advice = out_of_memory(caught.value)
    assert advice is not None and advice.startswith("out of memory on the CPU") and "--roi" in advice and "--overlap" in advice
    assert out_of_memory(RuntimeError("index out of range")) is None


def test_a_value_error_that_is_not_an_input_error_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the user's errors are one line: a ValueError from a bug is not passed off as bad input."""
    import gmim.cli.evaluate

    def broken(args):
        raise ValueError("shapes do not broadcast")

    monkeypatch.setattr(gmim.cli.evaluate, "run", broken)
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        main(["evaluate", str(tmp_path), str(tmp_path)])
