"""kubeprober: the umbrella CLI and the version. No logic lives here."""

__version__ = "0.1.0"
