"""The version, in a leaf module: importing it never imports the rest of the package."""

__all__ = ["__version__"]

__version__ = "0.1.0"
