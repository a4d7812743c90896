"""The `kprune` command: a thin layer over the library."""

import argparse
import os
import sys


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _progress(message):
    print(f"[kprune] {message}", file=sys.stderr, flush=True)


def _demo(args):
    from kprune.demo import run_demo

    result = run_demo(
        epochs=args.epochs, prune_epochs=args.prune_epochs,
        final_sparsity=args.sparsity, seed=args.seed, progress=_progress,
    )
    print(f"{'layer':<12} {'weight':<8} {'shape':<18} {'sparsity':>8}")
    for row in result["layers"]:
        print(f"{row['layer']:<12} {row['weight']:<8} {str(row['shape']):<18} {row['sparsity']:>8.2%}")
    print(f"dense accuracy   {result['dense_accuracy']:.4f}")
    print(f"pruned accuracy  {result['pruned_accuracy']:.4f}")
    return 0


def _unit_float(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="kprune", description="Pruning for Keras 3 models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="prune a small CNN on scikit-learn's digits data")
    demo.add_argument("--epochs", type=_positive_int, default=10, help="dense training epochs (10)")
    demo.add_argument("--prune-epochs", type=_positive_int, default=10, help="pruning epochs (10)")
    demo.add_argument("--sparsity", type=_unit_float, default=0.8, help="final sparsity (0.8)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError) as e:
        print(f"kprune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
