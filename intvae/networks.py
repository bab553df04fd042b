"""The VAE's networks: MLP encoder and decoder (paper section 3.2).

Encoder: q(z | x) = N(m(x), diag s(x)^2), s = exp(network output).
Decoder: raw network output handed to a likelihood head (``intvae.likelihoods``), e.g. the
paper's Gaussian with sigmoid mean and exp standard deviation.
"""

import torch
from torch import distributions as dist
from torch import nn

from intvae.checks import positive_int, require
from intvae.likelihoods import Head, Likelihood

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(sizes: list[int], activation: str, bias_init: float) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them, Xavier (Glorot)
    uniform weights and every bias set to ``bias_init`` (the authors used 0.1)."""
    require("activation", activation, activation in ACTIVATIONS,
            f"one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.constant_(linear.bias, bias_init)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder and MLP decoder with a pluggable likelihood head.

    ``encode(x)`` gives q(z | x) as a Normal of batch shape (B, latent); ``decode(z)`` maps z
    of shape (..., latent) to a ``Likelihood`` of batch shape (..., num_pixels).
    """

    def __init__(self, num_pixels: int, head: Head, hidden: list[int], latent: int = 25,
                 activation: str = "elu", bias_init: float = 0.1):
        super().__init__()
        self.num_pixels = positive_int("num_pixels", num_pixels)
        self.latent = positive_int("latent", latent)
        self.hidden = [positive_int("hidden", h) for h in hidden]
        self.activation = activation
        self.head = head
        self.encoder = mlp([num_pixels, *self.hidden, 2 * latent], activation, bias_init)
        self.decoder = mlp([latent, *reversed(self.hidden), head.params_per_pixel * num_pixels],
                           activation, bias_init)

    def encode(self, x: torch.Tensor) -> dist.Normal:
        loc, log_scale = at_least_float32(self.encoder(x)).chunk(2, dim=-1)
        return dist.Normal(loc, torch.exp(log_scale), validate_args=False)

    def decode(self, z: torch.Tensor) -> Likelihood:
        return self.head(at_least_float32(self.decoder(z)))


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a narrower float (bfloat16 or float16, what the linear
    layers return under mixed precision), so that q(z | x), the KL and the likelihood's
    parameters are computed in float32: bfloat16 would round the decoder's mean to about 0.002,
    a fifth of the interval half-width 0.01."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t
