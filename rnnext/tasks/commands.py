"""The tasks' subcommands of the rnnext command line: `rnnext sentiment`, `rnnext charlm`.

Each trains its model (seconds for sentiment, a few minutes for charlm), prints what it reached
and exits with status 0 when it reached the task's goal on the held-out data (sentiment: an
accuracy of at least sentiment.GOAL_ACCURACY; charlm: fewer bits per character than
charlm.GOAL_BITS), else 1. The options' defaults are the run functions' own.
"""
import argparse
import inspect


def sentiment(args):
    from . import sentiment as task

    result = task.run(**_run_arguments(args))
    return 0 if result["test_accuracy"] >= task.GOAL_ACCURACY else 1


def charlm(args):
    from . import charlm as task

    if args.load:
        sampling = ("sample_length", "temperature", "seed")
        print(task.sample_saved(args.load, **{k: v for k, v in vars(args).items()
                                              if k in sampling}))
        return 0
    result = task.run(**_run_arguments(args))
    return 0 if result["test_bits"] < task.GOAL_BITS else 1


def _run_arguments(args):
    """The options given on the command line, as keyword arguments of the task's run."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "func", "load")}


def _add_options(parser, run, options):
    """Adds `options` ((flag, run's argument, type, help)) whose defaults are run's: an option
    not given is not passed, so run's default applies (and the help shows it)."""
    defaults = {k: p.default for k, p in inspect.signature(run).parameters.items()}
    for flag, name, kind, text in options:
        shown = "" if defaults[name] is None else f" (default {defaults[name]})"
        parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS,
                            metavar="PATH" if kind is str else flag[2:].upper(),
                            help=text + shown)


def add_task_commands(sub):
    """Adds the subcommands to an argparse subparsers object."""
    from . import charlm as charlm_task
    from . import sentiment as sentiment_task

    common = [("--hidden", "hidden", int, "hidden units"),
              ("--epochs", "epochs", int, "epochs"),
              ("--lr", "lr", float, "learning rate"), ("--seed", "seed", int, "seed"),
              ("--threads", "n_threads", int, "threads (default: all the machine gives)"),
              ("--plot", "plot", str, "write the learning curves to this PNG file")]
    p = sub.add_parser("sentiment", help="train a vanilla RNN to classify short sentences "
                       "(many-to-one, one-hot words)")
    _add_options(p, sentiment_task.run, common)
    p.set_defaults(func=sentiment)
    p = sub.add_parser("charlm", help="train a character-level LSTM on Alice in Wonderland with "
                       "truncated BPTT, then sample text")
    _add_options(p, charlm_task.run, common + [
        ("--patience", "patience", int, "stop after this many epochs without a better "
         "held-out loss"),
        ("--input-dropout", "input_dropout", float, "dropout rate on the input characters"),
        ("--head-dropout", "head_dropout", float, "dropout rate on the output layer's input"),
        ("--bptt", "bptt", int, "steps per truncated-BPTT chunk"),
        ("--temperature", "temperature", float, "sampling temperature"),
        ("--length", "sample_length", int, "characters to sample"),
        ("--save", "save", str, "save the model of the best held-out epoch (an rnnext file)")])
    p.add_argument("--load", metavar="PATH",
                   help="sample from a saved model, without training")
    p.set_defaults(func=charlm)
