"""megasnow: a Megatron-style pretraining stack for code LMs (the Arctic-SnowCoder recipe).

Kept import-light on purpose: subpackages are imported by the user, never from here.
"""

__version__ = "0.1.0"
