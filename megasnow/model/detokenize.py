"""Incremental detokenization of generated tokens and stop-string matching, without re-decoding the whole output.

The prefix/read-offset scheme is vLLM's `detokenize_incrementally` (vllm/transformers_utils/detokenizer_utils.py):
decode a short window twice and keep the difference, holding back text that ends in an incomplete UTF-8 character.
"""

# Prompt tokens decoded as context before the first generated token, so SentencePiece's leading-space handling
# and byte-level merges see the text the output continues (vLLM uses the same 5).
CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """The text of a growing token sequence, decoded a few tokens at a time.

    `push(token_id)` returns the new text (possibly "" while a multi-byte character is incomplete); `text` is all
    text so far. The result equals `decode(prompt + output)[len(decode(prompt)):]` for SentencePiece and byte-level
    BPE tokenizers (tested), so a completion's text is exactly what continues its prompt. Each push decodes only
    the tokens since the last complete character plus the context window: O(1) per token, not O(output).
    """

    def __init__(self, tokenizer, prompt_ids=()):
        self.tokenizer = tokenizer
        self.ids = [int(t) for t in list(prompt_ids)[-CONTEXT_TOKENS:]]
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""

    def push(self, token_id):
        """Append one token; returns the text it completes (may be empty)."""
        self.ids.append(int(token_id))
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR):
            return ""  # an incomplete character (or a token that decodes to nothing yet): wait for more
        delta = new_text[len(prefix_text):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += delta
        return delta

    def flush(self):
        """Text of tokens still held back (an incomplete character at the very end), as the full decode gives it."""
        if self.read_offset == len(self.ids):
            return ""
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset:])
        delta = new_text[len(prefix_text):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += delta
        return delta


def find_stop(text, stop_strings, start=0):
    """Index of the earliest occurrence of any stop string in text[start':] (start' backs up so a match that
    straddles `start` is found), or -1."""
    best = -1
    for s in stop_strings:
        i = text.find(s, max(0, start - len(s) + 1))
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def partial_stop_length(text, stop_strings):
    """Length of the longest suffix of `text` that is a proper prefix of a stop string: text a stream must hold
    back because the next tokens may complete a stop string (which is never shown)."""
    longest = 0
    for s in stop_strings:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest
