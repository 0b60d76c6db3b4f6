"""The paper's three-window rule: a file's score is the mean of its top, middle and bottom windows.

Pure functions over token-id lists (no torch), so the rule is tested exactly with a mock scorer.
"""


def window_starts(num_tokens, window):
    """Start offsets of the windows that score a file of `num_tokens` content tokens.

    - num_tokens <= window: one window, the whole file (start 0).
    - otherwise three windows of exactly `window` tokens:
        top    = tokens[0 : window]
        middle = tokens[m : m + window] with m = (num_tokens - window) // 2, i.e. centred on the
                 file's midpoint (when the centre falls between two tokens, the window leans to the top)
        bottom = tokens[num_tokens - window : num_tokens]
      For files shorter than three windows these overlap; each still counts once in the mean, so
      every file longer than one window is the mean of exactly three window scores.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if num_tokens <= window:
        return [0]
    return [0, (num_tokens - window) // 2, num_tokens - window]


def file_windows(token_ids, window):
    """The token windows (lists) that score one file, per `window_starts`."""
    return [list(token_ids[s : s + window]) for s in window_starts(len(token_ids), window)]


def mean_of_windows(window_scores, owners, num_files):
    """Average window scores back to files: owners[i] is the file index of window i."""
    sums = [0.0] * num_files
    counts = [0] * num_files
    for score, owner in zip(window_scores, owners):
        sums[owner] += float(score)
        counts[owner] += 1
    return [s / c if c else None for s, c in zip(sums, counts)]


def score_token_lists(token_lists, window, score_windows):
    """File scores for token-id lists; `score_windows(list of windows) -> list of floats`.

    Every window of every file goes to `score_windows` in ONE call, so the caller can batch and
    length-sort across files; empty token lists get None.
    """
    windows, owners = [], []
    for i, ids in enumerate(token_lists):
        if len(ids) == 0:
            continue
        for w in file_windows(ids, window):
            windows.append(w)
            owners.append(i)
    scores = list(score_windows(windows)) if windows else []
    if len(scores) != len(windows):
        raise RuntimeError(f"window scorer returned {len(scores)} scores for {len(windows)} windows")
    return mean_of_windows(scores, owners, len(token_lists))
