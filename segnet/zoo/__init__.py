"""The model zoo: the typed registry of pretrained networks (``registry``), downloading and installing
them (``download``), which networks a command works on (``select``), and turning the network options into
files (``resolve``)."""

from .registry import DEFAULT_NETWORK, NETWORKS, NetworkInfo, find_network, is_installed, models_dir

__all__ = ["DEFAULT_NETWORK", "NETWORKS", "NetworkInfo", "find_network", "is_installed", "models_dir"]
