"""A tiny masked-gene model trained on a token store: the loaders end to end, and a recipe's
``[train]`` stage. Needs torch (``pip install 'atlasprep[torch]'``)."""

from atlasprep.train.masked import TrainConfig, TrainResult, train_masked_gene

__all__ = ["TrainConfig", "TrainResult", "train_masked_gene"]
