"""intvae: integral likelihood bounds for variational autoencoders.

Implements the IELBO and IRELBO of "Learning in Variational Autoencoders with
Kullback-Leibler and Renyi Integral Bounds" beside the density bounds they are compared with.
"""

__version__ = "0.1.0"
