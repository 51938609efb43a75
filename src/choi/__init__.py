"""choi: Customized Human-Object Interaction image generation."""

__version__ = "0.1.0"
