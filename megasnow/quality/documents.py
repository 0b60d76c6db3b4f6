"""Decide whether a document can be scored: empty, binary and undecodable texts get no score."""

BINARY_CONTROL_FRACTION = 0.1  # more control characters than this (in the first 8 KiB) = binary
REPLACEMENT_FRACTION = 0.1  # more U+FFFD than this = text that was decoded from non-UTF-8 bytes


def check_document_text(value):
    """(text, None) for a scorable document, or (None, reason) for one that gets no score."""
    if value is None:
        return None, "missing text"
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, "undecodable"
    if not isinstance(value, str):  # a number, list or mapping: there is no text to score
        return None, "non-string"
    if not value.strip():
        return None, "empty"
    if "\x00" in value:
        return None, "binary"
    sample = value[:8192]
    control = sum(1 for c in sample if (ord(c) < 32 and c not in "\t\n\r\f\v") or c == "\x7f")
    if control > BINARY_CONTROL_FRACTION * len(sample):
        return None, "binary"
    if sample.count("\ufffd") > REPLACEMENT_FRACTION * len(sample):
        return None, "undecodable"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a lossy decode
        return None, "undecodable"
    return value, None
