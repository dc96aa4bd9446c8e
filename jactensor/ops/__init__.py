"""The registered primitives, one module per family."""
from .elementwise import (add, divide, erf, exp, gelu, log, multiply, negative, power, relu, sigmoid, sqrt,
                          subtract, tanh)
from .linalg import einsum, matmul
from .nn import cross_entropy, layer_norm, log_softmax, mse, softmax
from .reduce import max, mean, sum
from .shape import broadcast_to, concatenate, getitem, reshape, scatter_add, transpose

__all__ = ["add", "divide", "erf", "exp", "gelu", "log", "multiply", "negative", "power", "relu", "sigmoid",
           "sqrt", "subtract", "tanh", "einsum", "matmul", "cross_entropy", "layer_norm", "log_softmax", "mse",
           "softmax", "max", "mean", "sum", "broadcast_to", "concatenate", "getitem", "reshape", "scatter_add",
           "transpose"]
