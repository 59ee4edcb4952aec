"""vaestudio: see what a VAE does to your images.

Importing this package is cheap: torch and diffusers are only imported by the modules that need
them, so the window can appear before they load.
"""

__version__ = "0.1.0"
