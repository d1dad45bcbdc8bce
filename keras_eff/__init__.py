"""keras-eff: shrink trained Keras 3 models and deploy them as int8 TFLite."""

from . import datasets
from .datasets import fashion_mnist

__version__ = "0.1.0"
