"""The Qt-free core of vaestudio: images, VAE loading, encode/decode, noise, metrics, MNIST.

Nothing in this package may import Qt (a test enforces it); the GUI is a thin layer on top.
"""
