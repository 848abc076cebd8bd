"""Layers and models, `import minigrad.nn as nn`: every module class, by concept file."""
from . import functional, lora
from .activation import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d
from .dropout import Dropout
from .embedding import Embedding
from .linear import Flatten, Identity, Linear
from .lora import LoRALinear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module, ModuleList, Parameter, Sequential
from .normalization import LayerNorm
from .pooling import MaxPool2d
from .recurrent import LSTM, RNN, RNNCell
from .attention import MultiheadAttention
from .positional import PositionalEncoding
from .transformer import GPT, TransformerBlock
from . import parallel, utils
