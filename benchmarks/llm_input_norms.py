"""How spread out the input features of each linear layer of the benchmark's tiny Llama are.

`python benchmarks/llm_input_norms.py` (after `bench_llm.py` has cached the model; ~1 min):
the dense model runs on `bench_llm.py`'s calibration windows (128 training windows of 128
bytes) with the inputs of every linear layer captured (`kprune.llm.hooks`), and for each
distinct input (query/key/value share one, gate/up share one) it prints, as a Markdown table,
the largest input-feature norm over the median one and the percentage of features whose norm
is above 5 x the mean.

Wanda scores a weight `|W_ij| * ||X_j||`: where every input feature has about the same norm,
it ranks the weights of each output by magnitude, as magnitude pruning per output does; it
departs from magnitude where a few features are much larger (the outlier features of large
language models). This table says where that is the case in the benchmark's model.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import text_lm  # noqa: E402

from kprune._internal.functional import sublayers  # noqa: E402
from kprune.llm.hooks import BlockStatistics, capture  # noqa: E402
from kprune.registry import keras_layers  # noqa: E402


def main():
    text = text_lm.corpus()
    model, _ = text_lm.trained_model("llama3", {}, {}, text)
    data = text_lm.calibration(text.train, 128, 128, seed=0)
    linears = []
    for layer in sublayers(model):
        view = keras_layers.linear_view(layer)
        if view is not None:
            linears.append((layer, view.variable.path.rsplit("/", 1)[0], view))
    collector = BlockStatistics(linears)
    with capture(linears, collector):
        for start in range(0, 128, 16):
            collector.new_batch()
            model({k: v[start:start + 16] for k, v in data.items()})
    rows, seen = [], {}
    for _, name, _ in linears:
        stats = collector.statistics(name)
        if id(stats) in seen:
            seen[id(stats)][0].append(name.rsplit("/", 1)[1])
            continue
        norms = stats.norms
        seen[id(stats)] = ([name], len(norms), norms.max() / np.median(norms), 100 * np.mean(norms > 5 * norms.mean()))
        rows.append(seen[id(stats)])
    print("| layers reading the input | features | max / median norm | norms > 5 x mean (%) |")
    print("|---|---:|---:|---:|")
    for names, d_in, ratio, outliers in sorted(rows, key=lambda r: r[0][0]):
        print(f"| {', '.join(names)} | {d_in} | {ratio:.1f} | {outliers:.2f} |")


if __name__ == "__main__":
    main()
