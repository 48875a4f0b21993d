"""Regenerate the keras-cv fixtures (needs keras-cv 0.9.0; not run by the tests).

Two tiny keras-cv ``ResNetV2Backbone`` networks (one per block type) with
non-trivial batch-norm statistics; their ``.weights.h5`` files and outputs on a
fixed input prove that keras-cv weights load into ours and compute the same.
"""

from pathlib import Path

import keras
import numpy as np
from keras_cv.models import ResNetV2Backbone

HERE = Path(__file__).parent
CONFIGS = {"basic_block": [64, 16], "block": [8, 16]}  # keras-cv's basic stem needs 64 first


def main() -> None:
    keras.utils.set_random_seed(1)
    out = {}
    for block_type, filters in CONFIGS.items():
        model = ResNetV2Backbone(stackwise_filters=filters, stackwise_blocks=[2, 2],
                                 stackwise_strides=[1, 2], include_rescaling=True,
                                 block_type=block_type, input_shape=(32, 32, 3))
        for w in model.weights:
            if any(k in w.path for k in ("moving", "gamma", "beta")):
                w.assign(np.random.uniform(0.5, 1.5, w.shape).astype("float32"))
        model.save_weights(HERE / f"keras_cv_{block_type}.weights.h5")
        x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        out[f"{block_type}_input"] = x
        out[f"{block_type}_output"] = model.predict(x, verbose=0)
        out[f"{block_type}_layer_names"] = np.array([layer.name for layer in model.layers[1:]])
    np.savez_compressed(HERE / "keras_cv_outputs.npz", **out)


if __name__ == "__main__":
    main()
