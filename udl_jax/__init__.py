"""udl_jax: deep clustering benchmarks in JAX (autoencoders, DEC, IDEC) with seed-averaged tables."""

__version__ = '0.1.0'
