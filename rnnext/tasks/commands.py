"""The tasks' subcommands of the rnnext command line: `rnnext sentiment`, `rnnext charlm`.

Each trains its model (about a minute at most with the defaults), prints what it reached and
exits with status 0 when it reached the task's goal (100% training accuracy; fewer bits per
character than the text's unigram entropy), else 1.
"""


def sentiment(args):
    from . import sentiment as task

    result = task.run(hidden=args.hidden, epochs=args.epochs, lr=args.lr, seed=args.seed,
                      n_threads=args.threads)
    return 0 if result["train_accuracy"] == 1.0 else 1


def charlm(args):
    from . import charlm as task

    if args.load:
        print(task.sample_saved(args.load, args.length, args.temperature, seed=args.seed))
        return 0
    result = task.run(hidden=args.hidden, epochs=args.epochs, bptt=args.bptt, lr=args.lr,
                      temperature=args.temperature, sample_length=args.length, seed=args.seed,
                      n_threads=args.threads, save=args.save)
    return 0 if result["train_bits"] < result["unigram_bits"] else 1


def add_task_commands(sub):
    """Adds the subcommands to an argparse subparsers object."""
    p = sub.add_parser("sentiment", help="train a vanilla RNN to classify short sentences "
                       "(many-to-one, one-hot words)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=sentiment)
    p = sub.add_parser("charlm", help="train a character-level LSTM on Alice in Wonderland with "
                       "truncated BPTT, then sample text")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--bptt", type=int, default=50, help="steps per truncated-BPTT chunk")
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--length", type=int, default=400, help="characters to sample")
    p.add_argument("--save", metavar="PATH", help="save the trained model (an rnnext file)")
    p.add_argument("--load", metavar="PATH", help="sample from a saved model, without training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=charlm)
