"""noderescue: keeps Kubernetes nodes healthy from outside the cluster."""

__version__ = "0.1.0"
USER_AGENT = f"noderescue/{__version__}"
