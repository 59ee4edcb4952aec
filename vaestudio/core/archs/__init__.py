"""One module per VAE architecture; each defines ``ARCHITECTURE`` (see ``vaestudio.core.registry``)."""
