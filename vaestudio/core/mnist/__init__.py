"""The MNIST training studio's core: the classic small VAE, its data, its trainer."""
