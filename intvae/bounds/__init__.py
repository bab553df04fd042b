"""The bound registry: every bound registered by name, each built from ``conf/bound/<name>.yaml``.

==========  ==================================================================
name        bound
==========  ==================================================================
elbo        ELBO (Kingma and Welling 2014)
ielbo       integral ELBO (paper eq. 2), optional normalization and tolerance
iw_ielbo    importance-weighted IELBO (IWAE form of the IELBO)
irelbo      integral Renyi bound (paper eq. 6-7)
iwae        IWAE (Burda et al. 2016)
vr          Renyi bound VR-alpha (Li and Turner 2016)
vr_max      VR-max (Li and Turner 2016)
miwae       MIWAE (Rainforth et al. 2018)
==========  ==================================================================
"""

from intvae.bounds.base import REGISTRY, Bound, BoundResult, get_bound, register
from intvae.bounds.elbo import ELBO
from intvae.bounds.ielbo import IELBO
from intvae.bounds.irelbo import IRELBO
from intvae.bounds.iw_ielbo import IWIELBO
from intvae.bounds.iwae import IWAE
from intvae.bounds.miwae import MIWAE
from intvae.bounds.vr import VR
from intvae.bounds.vr_max import VRMax

__all__ = [
    "REGISTRY", "Bound", "BoundResult", "get_bound", "register",
    "ELBO", "IELBO", "IRELBO", "IWIELBO", "IWAE", "MIWAE", "VR", "VRMax",
]
