"""The `kprune` command: a thin layer over the library."""

import argparse
import os
import sys


def _progress(message):
    print(f"[kprune] {message}", file=sys.stderr, flush=True)


def _demo(args):
    from kprune.cli.demo import run_demo

    output = None if args.no_export else args.output
    result = run_demo(
        epochs=args.epochs, prune_epochs=args.prune_epochs,
        final_sparsity=args.sparsity, channel_sparsity=args.channel_sparsity,
        finetune_epochs=args.finetune_epochs, output=output, seed=args.seed,
        progress=_progress, verbose=args.verbose,
    )
    print(f"{'layer':<12} {'weight':<8} {'shape':<18} {'sparsity':>8}")
    for row in result["layers"]:
        print(f"{row['layer']:<12} {row['weight']:<8} {str(row['shape']):<18} {row['sparsity']:>8.2%}")
    print(f"dense accuracy   {result['dense_accuracy']:.4f}")
    print(f"pruned accuracy  {result['pruned_accuracy']:.4f}")
    print(f"final accuracy   {result['final_accuracy']:.4f} (channels removed, fine-tuned)")
    if result["tflite_accuracy"] is not None:
        print(f"TFLite accuracy  {result['tflite_accuracy']:.4f} (int8, LiteRT)")
    params, macs = result["params"], result["macs"]
    print(f"parameters       {params[0]:,} dense -> {params[1]:,} nonzero")
    print(f"MACs             {macs[0]:,} dense -> {macs[1]:,}")
    if result["report"] is not None:
        print(result["report"])
    return 0


def _inspect(args):
    from kprune.stats.summaries import summary

    print(summary(args.file))
    return 0


def _load_array(path):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: '{path}' (argument --calibration).")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"Could not read '{path}' as a NumPy .npy/.npz file: {e}") from None
    if hasattr(data, "files"):  # .npz: one array per model input
        return [data[name] for name in data.files]
    return data


def _export(args):
    from kprune.export.exporter import export_tflite
    from kprune.utils.files import load_keras_file

    model = load_keras_file(args.model, argname="MODEL")
    calibration = _load_array(args.calibration) if args.calibration else None
    if args.quantize == "int8" and calibration is None:
        raise ValueError("--quantize int8 needs --calibration DATA.npy (a few hundred model inputs).")
    sparse = {"auto": "auto", "on": True, "off": False}[args.sparse_encoding]
    _progress(f"exporting {args.model} -> {args.output}")
    report = export_tflite(
        model, args.output, quantize=None if args.quantize == "none" else args.quantize,
        representative_data=calibration, sparse_encoding=sparse, int8_io=args.int8_io,
        verify=not args.no_verify, verbose=args.verbose,
    )
    print(report)
    if args.layers:
        print(report.layers_table())
    if report.verified is False:
        print("kprune: error: the TFLite file's outputs differ from Keras (see above)", file=sys.stderr)
        return 1
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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's, the converter's and LiteRT's log lines")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=[common], help="prune a small CNN on scikit-learn's digits data")
    demo.add_argument("--epochs", type=_positive_int, default=10, help="dense training epochs (10)")
    demo.add_argument("--prune-epochs", type=_positive_int, default=10, help="pruning epochs (10)")
    demo.add_argument("--sparsity", type=_unit_float, default=0.8, help="final sparsity (0.8)")
    demo.add_argument("--channel-sparsity", type=_unit_float, default=0.25,
                      help="fraction of channels removed, 0 to skip (0.25)")
    demo.add_argument("--finetune-epochs", type=_positive_int, default=3,
                      help="fine-tuning epochs after channel removal (3)")
    demo.add_argument("--output", default="kprune_demo.tflite",
                      help="int8 TFLite file to write (kprune_demo.tflite)")
    demo.add_argument("--no-export", action="store_true", help="skip the TFLite export")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.set_defaults(func=_demo)

    inspect = sub.add_parser("inspect", parents=[common],
                             help="per-layer sparsity, parameters and MACs of a .keras or .tflite file")
    inspect.add_argument("file", help="a .keras or .tflite file")
    inspect.set_defaults(func=_inspect)

    export = sub.add_parser("export", parents=[common], help="convert a .keras model to a verified TFLite file")
    export.add_argument("model", metavar="MODEL.keras", help="the Keras model (loaded in safe mode)")
    export.add_argument("output", metavar="OUT.tflite", help="the file to write")
    export.add_argument("--quantize", choices=["none", "dynamic", "float16", "int8"], default="none",
                        help="post-training quantization (none)")
    export.add_argument("--calibration", metavar="DATA.npy",
                        help="model inputs for int8 calibration (.npy, or .npz with one array per input)")
    export.add_argument("--int8-io", action="store_true", help="int8 inputs and outputs (with --quantize int8)")
    export.add_argument("--sparse-encoding", choices=["auto", "on", "off"], default="auto",
                        help="TFLite sparse weight format (auto: when >= 50%% zeros and LiteRT runs it)")
    export.add_argument("--no-verify", action="store_true", help="skip the comparison with Keras")
    export.add_argument("--layers", action="store_true",
                        help="also print the exported model's per-layer parameters and MACs")
    export.set_defaults(func=_export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError, RuntimeError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"kprune: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
