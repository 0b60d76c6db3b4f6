"""The error of the converters (no heavy imports, so a tool can check its inputs before torch loads)."""
from megasnow.errors import UserError


class ConversionError(UserError, RuntimeError):
    """A checkpoint, HF folder or GGUF file that cannot be converted; names the path and what is wrong."""
