"""Compute-optimal scaling laboratory for encoder-decoder Transformers.

Data flows one way: corpus -> token shards -> runs -> results table -> fits -> plan and pictures.
"""

__version__ = "0.1.0"
