"""Token counts as people write them (12.5B, 300M, 40k): the one parser of selection budgets."""
import re


def parse_token_count(text):
    """'12.5B', '300M', '40k' or a plain integer (k/M/B/T: 1e3/1e6/1e9/1e12) -> a positive int token count.
    Raises ValueError naming the text. The one parser of token budgets (annotate.py --budget-tokens, the recipe's
    ablation.budget_tokens)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(-?[0-9]*\.?[0-9]+)\s*([kKmMbBtT]?)\s*", str(text))
        if not m:
            raise ValueError(f"not a token count: {text!r} (use e.g. 12.5B, 300M, 40k, 40000)")
        value = int(round(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]))
    if value <= 0:
        raise ValueError(f"a token count must be positive, got {text!r}")
    return value
