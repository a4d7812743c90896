"""A functional ViT-like model (`keras.layers.MultiHeadAttention`) made smaller
(issue 25): half its heads, half its MLP units and a block removed.

The smaller model is a plain Functional model that gives the masked model's
outputs (1e-4), saves and loads as a `.keras` file, exports to a verified
TFLite file whose MACs equal `count_macs`, and holds the parameters its
widths imply.
"""

import keras
import numpy as np

import kprune
from kprune import transformers

PATCHES, PATCH, D, HEADS, HD, MLP, LAYERS, CLASSES = 9, 12, 16, 4, 4, 32, 3, 5


def _vit():
    x = keras.Input((PATCHES, PATCH))
    h = keras.layers.Dense(D, name="patch_embedding")(x)
    for i in range(LAYERS):
        n = keras.layers.LayerNormalization(name=f"ln1_{i}")(h)
        a = keras.layers.MultiHeadAttention(HEADS, HD, name=f"mha_{i}")(n, n)
        h = keras.layers.Add(name=f"add1_{i}")([h, a])
        n = keras.layers.LayerNormalization(name=f"ln2_{i}")(h)
        m = keras.layers.Dense(MLP, activation="gelu", name=f"fc1_{i}")(n)
        m = keras.layers.Dense(D, name=f"fc2_{i}")(m)
        h = keras.layers.Add(name=f"add2_{i}")([h, m])
    h = keras.layers.LayerNormalization(name="ln_final")(h)
    y = keras.layers.Dense(CLASSES, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _data(n=8):
    return np.random.default_rng(1).normal(size=(n, PATCHES, PATCH)).astype("float32")


def test_a_vit_loses_half_its_heads_and_mlp_units_and_a_block(tmp_path):
    model, x = _vit(), _data()
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    blocks = transformers.plan_blocks(model, 1, data=x)
    assert len(transformers.transformer_blocks(model)) == LAYERS and len(blocks.removed) == 1
    small = transformers.remove_blocks(kprune.remove_channels(model, plan), blocks)
    masked = transformers.mask_blocks(kprune.mask_channels(model, plan), blocks)
    assert type(small) is type(model)  # Functional
    np.testing.assert_allclose(small(x), masked(x), atol=1e-4)
    assert not np.allclose(small(x), model(x), atol=1e-3)
    attention = [layer for layer in small.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert [layer.num_heads for layer in attention] == [HEADS // 2] * (LAYERS - 1)
    assert [layer.units for layer in small.layers if layer.name.startswith("fc1_")] == [MLP // 2] * (LAYERS - 1)
    # Parameters: what the widths imply.
    block = (2 * 2 * D                                       # two LayerNorms
             + 3 * (D * (HEADS // 2) * HD + (HEADS // 2) * HD) + (HEADS // 2) * HD * D + D  # q, k, v, o
             + D * (MLP // 2) + MLP // 2 + (MLP // 2) * D + D)  # the MLP
    dense_params = PATCH * D + D + 2 * D + D * CLASSES + CLASSES
    assert kprune.count_params(small) == dense_params + (LAYERS - 1) * block
    # Saves and loads; exports to a verified file whose MACs are the counted ones.
    path = str(tmp_path / "vit.keras")
    small.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(x), small(x), atol=1e-6)
    report = kprune.export_tflite(small, str(tmp_path / "vit.tflite"), sample_inputs=x, measure_latency=False)
    assert report.verified
    assert report.macs == kprune.summary(str(tmp_path / "vit.tflite")).macs == kprune.count_macs(small)
    assert kprune.count_macs(small) < 0.5 * kprune.count_macs(model)
