"""jaxlm: language-model research in JAX/Flax, from a laptop CPU to a pod."""

__version__ = "0.1.0"
