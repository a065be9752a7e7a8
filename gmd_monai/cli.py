"""Command-line entry points (``gmd-monai <command>`` or ``python -m gmd_monai <command>``), built with fire.

Commands (each is a plain function in the module named for its idea; this file only dispatches):

* ``segment``            segment one patient's partial MRI set (gmd_monai.inference.segment)
* ``segment_batch``      segment every case folder under a directory (gmd_monai.inference.segment)
* ``evaluate``           15-subset evaluation of a trained model (gmd_monai.evaluation)
* ``prepare_datalist``   scan a BraTS folder and write a datalist JSON (gmd_monai.data.brats)
* ``synthetic``          write the built-in synthetic BraTS-like dataset (gmd_monai.data.synthetic)
* ``demo``               synthetic data -> train -> 15-subset table (gmd_monai.demo)
* ``sentiment_evaluate`` 7-subset sentiment evaluation (gmd_monai.sentiment_evaluation)
* ``plot_diagnostics``   pictures of GMD's weights, gradients and conflicts from a training run's logs
                         (gmd_monai.diagnostics_plots)
* ``zoo_bundle``         a self-contained Model Zoo bundle archive carrying its code (gmd_monai.zoo_bundle)

One error contract for every command: a problem with the user's input (a project error, a missing or
unreadable file, a bad value) is one line on stderr naming the file and the problem, exit code 2;
Ctrl-C is one line, exit 130. ``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

_COMMANDS = {
    "segment": ("gmd_monai.inference.segment", "segment_cli"),
    "segment_batch": ("gmd_monai.inference.segment", "segment_batch_cli"),
    "evaluate": ("gmd_monai.evaluation", "evaluate_cli"),
    "prepare_datalist": ("gmd_monai.data.brats", "build_datalist"),
    "synthetic": ("gmd_monai.data.synthetic", "make_synthetic_brats"),
    "demo": ("gmd_monai.demo", "demo"),
    "sentiment_evaluate": ("gmd_monai.sentiment_evaluation", "evaluate_cli"),
    "plot_diagnostics": ("gmd_monai.diagnostics_plots", "plot_diagnostics_cli"),
    "zoo_bundle": ("gmd_monai.zoo_bundle", "make_zoo_bundle"),
}


def _lazy(module: str, attr: str):
    def command(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    command.__name__ = attr
    try:  # show the real signature and docstring in --help when the module imports
        real = getattr(importlib.import_module(module), attr)
        return real
    except (ImportError, AttributeError):
        return command


def _one_line(command: str, e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return f"gmd-monai {command}: error: {msg}"


def main(argv: list[str] | None = None) -> None:
    import fire

    from gmd_monai.inference.errors import InferenceError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    name = argv[0].replace("-", "_") if argv else ""
    command = argv[0] if argv else ""
    try:
        if name in _COMMANDS:
            fire.Fire(_lazy(*_COMMANDS[name]), command=argv[1:], name=f"gmd-monai {command}")
            return
        commands = {k.replace("_", "-"): _lazy(*v) for k, v in _COMMANDS.items()}
        fire.Fire(commands, command=argv, name="gmd-monai")
    except (InferenceError, OSError, ValueError) as e:
        if debug:
            raise
        print(_one_line(command, e), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"gmd-monai {command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
