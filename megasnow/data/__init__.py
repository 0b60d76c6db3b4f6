"""Data layer: indexed token datasets (MMIDIDX), tokenizers, GPT sample datasets and blends.

Import-light by contract: importing this package must not import torch, Triton or the model.
"""
