"""The functional interface, `import minigrad.nn.functional as F`: every op of the layers, as a plain function.

Each function lives in the file of its concept; this module only gathers them.
"""
from .activation import erf, gelu, log_softmax, normal_cdf, relu, sigmoid, softmax, tanh
from .conv import conv2d, convolve2d
from .dropout import dropout
from .embedding import embedding
from .linear import linear
from .loss import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse_loss
from .normalization import layer_norm
from .pooling import max_pool2d
from .recurrent import lstm_cell, rnn_tanh_cell
from .attention import scaled_dot_product_attention
from .positional import positional_encoding
