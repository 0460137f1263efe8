"""Networks: the architecture registry, ``Network`` (a classifier cut into blocks), base training.

Importing this package fills the registry with the built-in architectures (nets/architectures.py),
as timm's ``models/__init__`` does: ``registry.py`` holds only the registry state, ``network.py``
the ``Network`` class and the builder protocol, ``architectures.py`` the builders.
"""

from . import architectures as _architectures  # noqa: F401  (registers the built-in architectures)
from . import ecosystem as _ecosystem  # noqa: F401  (registers the torchvision: and timm: names)
from .network import Network, build_network
from .registry import ArchInfo, Built, get_architecture, list_architectures, register_architecture

__all__ = [
    "ArchInfo",
    "Built",
    "Network",
    "build_network",
    "get_architecture",
    "list_architectures",
    "register_architecture",
]
