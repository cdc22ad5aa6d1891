"""Training-time augmentation: per-image policies in the input pipeline, batch mixing in the train step.

    ops        image operations on uint8 (H, W, 3) tensors, TensorFlow (run inside tf.data)
    policies   AutoAugment (ImageNet policy v0) and RandAugment built from `ops`, stateless
    erasing    random erasing of a normalised image, TensorFlow
    mix        mixup and CutMix of a device batch with smoothed mixed targets, JAX
    checks     config validation of the fields above, with messages naming field, value and what is allowed

The submodules are not imported here: the train step needs `mix` (JAX) without TensorFlow, and the
input pipeline needs `policies` without JAX.
"""
