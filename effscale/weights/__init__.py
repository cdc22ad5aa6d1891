"""Importing pretrained EfficientNet weights into effscale's variables tree.

Sources: Keras applications files and in-memory models (`effscale.weights.keras`), timm
``tf_efficientnet_b*`` state dicts (`effscale.weights.timm`) and effscale workdirs; one entry
point for a run's initial weights (`effscale.weights.initial.load_initial`). Every source is
checked and merged by `effscale.weights.assemble`: every effscale variable is filled from the
source except a top that is deliberately dropped, and every source weight is used except that
top; anything else raises `WeightImportError` naming what was expected. `effscale.convert`
re-exports the public names.
"""
