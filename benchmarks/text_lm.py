"""A tiny language model trained here, on text that ships with Python: the shared fixture of LLM benchmarks.

No data set or pretrained weight can be downloaded on this machine, so the
benchmarks of one-shot and structured pruning of language models train
their own model:

* **Corpus** (`corpus()`): the docstrings of the standard library's modules
  (`ast.get_docstring` on every `.py` file of `sysconfig`'s stdlib, without
  `test`, `idlelib`, `lib2to3` and `site-packages`; nothing is imported) plus
  the help topics of `pydoc_data.topics`. Documents are split **by module**
  (a stable hash of the module's path) into train and held-out text, so that
  held-out perplexity is measured on modules the model never saw. The
  Python version and a SHA-256 of the corpus are recorded: another Python
  gives another corpus.
* **Tokens**: bytes (vocabulary 256); documents are joined with a `\\x00`
  separator.
* **Model** (`build(family, **config)`): a KerasHub `Llama3CausalLM` (GQA:
  more query than key/value heads) or `GemmaCausalLM`, sizes as arguments.
* **Training** (`train`): AdamW with warm-up and cosine decay on random
  windows of the training text, batch by batch (`train_on_batch`).
* **Cache** (`trained_model`): weights and a JSON record under
  `$KPRUNE_CACHE/text_lm/<key>/` (default `~/.cache/kprune`), keyed by the
  family, config, training settings and corpus hash: the first call trains
  (minutes), later calls load (seconds).
* **Evaluation** (`perplexity`): `exp` of the mean next-byte cross-entropy
  over non-overlapping held-out windows; `calibration(tokens, n, seq_len)`
  draws the random training windows that one-shot pruning calibrates on.

Usage: `python benchmarks/text_lm.py [--family llama3] [--steps N]` trains
(or loads) the default model and prints its held-out perplexity.
"""

import argparse
import ast
import dataclasses
import hashlib
import json
import math
import os
import sys
import sysconfig
import time
import warnings
import zlib

import numpy as np

SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo"}
SEPARATOR = 0  # byte between documents
VOCABULARY = 256

# The default model: small enough to train in minutes on 2 CPU cores, large
# enough to have GQA (8 query heads read 2 key/value heads) and an FFN wider
# than the hidden size.
LLAMA3 = dict(num_layers=4, hidden_dim=256, num_query_heads=8, num_key_value_heads=2, intermediate_dim=768)
GEMMA = dict(num_layers=4, hidden_dim=256, num_query_heads=8, num_key_value_heads=2, head_dim=32,
             intermediate_dim=2 * 768)
DEFAULTS = {"llama3": LLAMA3, "gemma": GEMMA}
TRAINING = dict(steps=800, batch_size=16, seq_len=128, learning_rate=2e-3, warmup=100, weight_decay=0.01, seed=0)


@dataclasses.dataclass
class Corpus:
    """Byte tokens of the training and held-out text, and where they came from."""

    train: np.ndarray
    held_out: np.ndarray
    train_modules: int
    held_out_modules: int
    python: str
    sha256: str

    def info(self):
        return {"python": self.python, "sha256": self.sha256, "train_bytes": int(self.train.size),
                "held_out_bytes": int(self.held_out.size), "train_modules": self.train_modules,
                "held_out_modules": self.held_out_modules}


def documents():
    """`[(module, text)]`: stdlib docstrings by module, then pydoc's help topics (sorted, deterministic)."""
    root = sysconfig.get_paths()["stdlib"]
    docs = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            texts = [ast.get_docstring(node) for node in ast.walk(tree)
                     if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
            texts = [t for t in texts if t and len(t) > 20]
            if texts:
                docs.append((module, "\n\n".join(texts)))
    try:
        from pydoc_data import topics
    except ImportError:
        topics = None
    if topics is not None:
        for key in sorted(topics.topics):
            docs.append((f"pydoc_data.topics.{key}", topics.topics[key]))
    return docs


def corpus(held_out_fraction=0.1):
    """The corpus, split by module: a module is held out when a CRC32 of its
    name falls in the first `held_out_fraction` of the range."""
    train, held, n_train, n_held = [], [], 0, 0
    digest = hashlib.sha256()
    for module, text in documents():
        data = text.encode("utf-8", errors="replace").replace(b"\x00", b" ")
        digest.update(module.encode() + b"\x00" + data + b"\x00")
        if zlib.crc32(module.encode()) / 2 ** 32 < held_out_fraction:
            held.append(data)
            n_held += 1
        else:
            train.append(data)
            n_train += 1
    join = bytes([SEPARATOR]).join
    return Corpus(np.frombuffer(join(train), np.uint8).astype(np.int32),
                  np.frombuffer(join(held), np.uint8).astype(np.int32),
                  n_train, n_held, sys.version.split()[0], digest.hexdigest())


def windows(tokens, n, seq_len, seed=0):
    """`n` random windows of `seq_len + 1` tokens (inputs and next-token targets)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, tokens.size - seq_len - 1, size=n)
    return np.stack([tokens[s:s + seq_len + 1] for s in starts])


def calibration(tokens, n, seq_len, seed=0):
    """`{"token_ids", "padding_mask"}` of `n` random windows: one-shot pruning's calibration data."""
    ids = windows(tokens, n, seq_len, seed)[:, :-1].astype("int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def build(family="llama3", dtype=None, **config):
    """A KerasHub CausalLM (no preprocessor) with `config` over the family's defaults."""
    import keras_hub

    settings = {**DEFAULTS[family], **config, "vocabulary_size": VOCABULARY}
    if family == "llama3":
        backbone = keras_hub.models.Llama3Backbone(dtype=dtype, **settings)
        return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
    if family == "gemma":
        backbone = keras_hub.models.GemmaBackbone(dtype=dtype, **settings)
        return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    raise ValueError(f"Argument `family` must be one of {sorted(DEFAULTS)}. Received: family={family!r}")


def _schedule(step, steps, warmup, peak):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(model, tokens, steps, batch_size, seq_len, learning_rate, warmup, weight_decay, seed, log=None):
    """Train `model` on random windows of `tokens`; returns the loss of each step."""
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=1.0)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        optimizer.learning_rate.assign(_schedule(step, steps, warmup, learning_rate))
        batch = windows(tokens, batch_size, seq_len, seed=int(rng.integers(2 ** 31)))
        x = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1])}
        loss = model.train_on_batch(x, batch[:, 1:])
        losses.append(float(loss if np.ndim(loss) == 0 else loss[0]))
        if log and (step + 1) % 100 == 0:
            log(f"step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.3f} "
                f"({time.perf_counter() - start:.0f} s)")
    return losses


def perplexity(model, tokens, seq_len=128, batch_size=16, max_windows=None):
    """`exp(mean cross-entropy)` of next-token prediction over non-overlapping windows of `tokens`
    (`max_windows` of them spread evenly over the text, or all)."""
    import keras

    n = (tokens.size - 1) // seq_len
    chosen = np.arange(n)
    if max_windows is not None and max_windows < n:
        chosen = np.linspace(0, n - 1, max_windows).round().astype(int)  # spread over the whole text
    total, count = 0.0, 0
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start:start + batch_size]
        batch = np.stack([tokens[r * seq_len:r * seq_len + seq_len + 1] for r in rows]).astype("int32")
        x = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1])}
        logits = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total -= np.take_along_axis(log_probs, batch[:, 1:, None], axis=-1).sum()
        count += batch[:, 1:].size
    return float(math.exp(total / count))


def cache_dir():
    return os.path.join(os.environ.get("KPRUNE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kprune")),
                        "text_lm")


def trained_model(family="llama3", config=None, training=None, text=None, log=None):
    """`(model, record)`: the model trained on the corpus, from the cache when it
    is there (keyed by family, config, training settings and corpus hash)."""
    import keras

    config = {**DEFAULTS[family], **(config or {})}
    training = {**TRAINING, **(training or {})}
    text = text or corpus()
    key_source = json.dumps({"family": family, "config": config, "training": training, "corpus": text.sha256,
                             "vocabulary": VOCABULARY}, sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    folder = os.path.join(cache_dir(), f"{family}-{key}")
    weights, record_path = os.path.join(folder, "model.weights.h5"), os.path.join(folder, "record.json")
    keras.utils.set_random_seed(training["seed"])
    model = build(family, **config)
    if os.path.exists(weights) and os.path.exists(record_path):
        with warnings.catch_warnings():  # the saved optimizer state is not wanted here
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(weights)
        with open(record_path) as f:
            record = json.load(f)
        record["cached"] = True
        return model, record
    start = time.perf_counter()
    losses = train(model, text.train, log=log, **training)
    record = {"family": family, "config": config, "training": training, "corpus": text.info(),
              "train_seconds": round(time.perf_counter() - start, 1), "final_loss": float(np.mean(losses[-50:])),
              "backend": keras.backend.backend(), "params": int(model.count_params()), "cached": False}
    os.makedirs(folder, exist_ok=True)
    model.save_weights(weights + ".tmp.weights.h5")
    os.replace(weights + ".tmp.weights.h5", weights)
    with open(record_path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(record_path + ".tmp", record_path)
    return model, record


def main():
    p = argparse.ArgumentParser(description="Train (or load) the tiny text LM and print its held-out perplexity.")
    p.add_argument("--family", default="llama3", choices=sorted(DEFAULTS))
    p.add_argument("--steps", type=int, default=TRAINING["steps"])
    args = p.parse_args()
    text = corpus()
    print(json.dumps(text.info()))
    model, record = trained_model(args.family, training={"steps": args.steps}, text=text,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(record))
    print("held-out perplexity", perplexity(model, text.held_out, max_windows=256))


if __name__ == "__main__":
    main()
