"""Fill-in-the-middle (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle"), applied
to samples as they are read, so one binarized dataset serves FIM and plain runs; and the FIM prompt for generation.

A sample (seq_len + 1 token ids) is cut into units at its end-of-document tokens (and, at file level, at the file
separators of repository documents). With probability `rate` a unit's text is split at two uniformly random
character positions into prefix P, middle M and suffix S, each re-tokenized, and rearranged as

    PSM: <fim_prefix> P <fim_suffix> S <fim_middle> M
    SPM: <fim_prefix> <fim_suffix> S <fim_middle> P M          (with probability `spm_rate`)

SPM is the variant bigcode's Megatron-LM `permute()` (StarCoder, SantaCoder) calls "variant 2 from FIM paper" and
Code Llama uses (`suffix_first` in transformers' CodeLlamaTokenizer): the prompt ends with the prefix, so the middle
continues it. Every unit keeps its length: the 3 sentinels and the re-tokenization's extra tokens are taken off the
end of the suffix (then the start of the prefix), as gpt-neox's FIM `permute(truncate_or_pad=True)` does, and a
shorter result is padded with <fim_pad> after the suffix. So separators stay where they were (document masking sees
the same documents) and the middle, the part the model learns to write, is never cut. Draws depend only on
(seed, stream, sample index, unit), so every data-parallel layout and every resume sees the same samples.

Only the tokens around the two cuts are decoded and re-encoded (megasnow.data.token_bytes locates them).
"""
import numpy as np

from megasnow.data.token_bytes import token_bytes
from megasnow.data.tokenizer import TokenizerError

LEVELS = ("file", "sample")
FORMATS = ("psm", "spm")
STREAMS = {"train": 0, "valid": 1}
WINDOW_TOKENS = 8  # tokens re-encoded on each side of a cut inside a token, at most (to the nearest word start)
_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_EMPTY = np.zeros(0, dtype=np.int64)

def _mix(z):
    """splitmix64's finalizer (Steele et al. 2014) on a 64-bit int: a counter-based uniform hash."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def sample_key(seed, stream, index):
    """The 64-bit key of sample `index`'s draws: a pure function of (seed, stream, index)."""
    key = _mix((int(seed) + _GOLDEN) & _M64)
    key = _mix(key ^ ((int(stream) * _GOLDEN + 0x5F1) & _M64))
    return _mix(key ^ int(index))


def uniform(key, unit, k):
    """Draw k (0: FIM?, 1: SPM?, 2 and 3: the cuts) of a sample's unit `unit`, in [0, 1) with 53 bits."""
    return (_mix((key + (4 * unit + k + 1) * _GOLDEN) & _M64) >> 11) * (1.0 / (1 << 53))


def unit_draws(seed, stream, index, num_units):
    """float64 [num_units, 4]: every draw of the units of sample `index` (what the transform uses, for tests)."""
    key = sample_key(seed, stream, index)
    return np.array([[uniform(key, u, k) for k in range(4)] for u in range(num_units)], dtype=np.float64)


def fim_prompt_ids(fim, encode, prefix, suffix, fmt="psm"):
    """Token ids of an infilling prompt in the trained format; the model writes the middle next.

    fim: a megasnow.data.tokenizer.FIMTokens; encode: text -> ids (no BOS); fmt: 'psm' or 'spm' (see the module doc).
    """
    if fmt not in FORMATS:
        raise ValueError(f"FIM format must be one of {FORMATS}, got {fmt!r}")
    p, s = list(encode(prefix)) if prefix else [], list(encode(suffix)) if suffix else []
    if fmt == "psm":
        return [fim.prefix, *p, fim.suffix, *s, fim.middle]
    return [fim.prefix, fim.suffix, *s, fim.middle, *p]


def parse_fim_unit(ids, fim):
    """Undo the rearrangement of one FIM unit: (format, prefix, suffix, tail) with <fim_pad> dropped, or None when
    `ids` is not a FIM unit (it does not start with the prefix sentinel). tail is what follows <fim_middle>: the
    middle (PSM), or the prefix then the middle as one stream (SPM, where prefix is None)."""
    ids = [int(t) for t in ids]
    if len(ids) < 3 or ids[0] != fim.prefix:
        return None
    mid = ids.index(fim.middle)
    if ids[1] == fim.suffix:
        return "spm", None, [t for t in ids[2:mid] if t != fim.pad], ids[mid + 1:]
    suf = ids.index(fim.suffix)
    return "psm", ids[1:suf], [t for t in ids[suf + 1:mid] if t != fim.pad], ids[mid + 1:]


class FIMTransform:
    """`transform(sample, index)` -> the sample with FIM applied to its units (np.int64, same length).

    tokenizer: a megasnow Tokenizer with FIM sentinels (TokenizerError otherwise, or when its tokens do not spell the
    text: megasnow.data.token_bytes); rate / spm_rate: probabilities per unit; level: 'file' (units end at the end of
    document and at file separators; the `<repo_name>` header is never transformed) or 'sample' (units end at the end
    of document only); seed, stream: the draws' key (stream: STREAMS[split]); eod_id: end-of-document id;
    bos_id: an id documents start with (kept in place), or None.
    """

    def __init__(self, tokenizer, rate, spm_rate=0.5, level="file", seed=0, eod_id=None, bos_id=None, stream=0):
        if not 0.0 <= rate <= 1.0 or not 0.0 <= spm_rate <= 1.0:
            raise ValueError(f"FIM rate and spm_rate must be in [0, 1], got {rate}, {spm_rate}")
        if level not in LEVELS:
            raise ValueError(f"FIM level must be one of {LEVELS}, got {level!r}")
        self.tokenizer, self.rate, self.spm_rate, self.level = tokenizer, float(rate), float(spm_rate), level
        self.seed, self.stream = int(seed), int(stream)
        self.fim = tokenizer.fim_tokens()
        if self.fim is None:
            raise TokenizerError(f"{tokenizer.path}: has no fill-in-the-middle tokens (none of the <fim_prefix>, "
                                 f"<|fim_prefix|>, <fim-prefix>, ... families)")
        self.eod_id = tokenizer.eod_id if eod_id is None else int(eod_id)
        self.bos_id = None if bos_id is None else int(bos_id)
        self.file_sep_id = tokenizer.file_sep_id
        if level == "file" and self.file_sep_id is None:
            raise TokenizerError(f"{tokenizer.path}: has no file separator token ({', '.join(_file_sep_names())}) "
                                 f"for file-level FIM; use level 'sample'")
        from megasnow.data import special_tokens

        self.repo_name_id = tokenizer.token_to_id(special_tokens.REPO_NAME)
        self.separators = [self.eod_id] + ([self.bos_id] if self.bos_id is not None else []) + (
            [self.file_sep_id] if level == "file" else [])
        self._load_table()

    def _load_table(self):
        fixed = [*self.separators, *self.fim.sentinels, self.fim.pad]
        self.table = token_bytes(self.tokenizer, [i for i in fixed if i is not None])

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["table"]  # rebuilt from the tokenizer file in a worker
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load_table()

    # ------------------------------------------------------------------ one sample
    def units(self, sample):
        """(starts, ends) of the non-empty runs of `sample` between separator ids."""
        is_sep = sample == self.separators[0]
        for sep in self.separators[1:]:
            is_sep |= sample == sep
        bounds = np.flatnonzero(is_sep)
        starts = np.concatenate([[0], bounds + 1])
        ends = np.concatenate([bounds, [len(sample)]])
        keep = ends > starts
        return starts[keep], ends[keep]

    def __call__(self, sample, index):
        sample = np.asarray(sample, dtype=np.int64)
        if self.rate == 0.0:
            return sample
        starts, ends = self.units(sample)
        if len(starts) == 0:
            return sample
        key = sample_key(self.seed, self.stream, index)
        out = None
        for u in range(len(starts)):
            if uniform(key, u, 0) >= self.rate:
                continue
            s, e = int(starts[u]), int(ends[u])
            if self.level == "file" and sample[s] == self.repo_name_id:
                continue  # the repository header `<repo_name>owner/repo`
            new = self.permute_unit(sample[s:e], [uniform(key, u, k) for k in range(4)])
            if new is not None:
                if out is None:
                    out = sample.copy()
                out[s:e] = new
        return sample if out is None else out

    def permute_unit(self, unit, draws):
        """The FIM rearrangement of one unit (np.int64, same length), or None when the unit stays as it is (no
        characters, or too short to hold the sentinels). draws: (_, spm, cut 1, cut 2) uniforms."""
        parts = self.split_unit(unit, draws[2], draws[3])
        if parts is None:
            return None
        prefix, middle, suffix = parts
        over = 3 + len(prefix) + len(middle) + len(suffix) - len(unit)
        pad = _EMPTY
        if over > 0:  # the end of the suffix goes first, then the start of the prefix; the middle stays whole
            cut = min(over, len(suffix))
            suffix = suffix[:len(suffix) - cut]
            over -= cut
            if over > len(prefix):
                return None
            prefix = prefix[over:]
        elif over < 0:
            pad = np.full(-over, self.fim.pad, dtype=np.int64)
        f = self.fim
        if draws[1] < self.spm_rate:
            return np.concatenate(([f.prefix, f.suffix], suffix, pad, [f.middle], prefix, middle))
        return np.concatenate(([f.prefix], prefix, [f.suffix], suffix, pad, [f.middle], middle))

    def split_unit(self, unit, u1, u2):
        """(prefix, middle, suffix) np.int64 token arrays of `unit` cut at the character positions
        floor(u * (chars + 1)) of two uniforms, or None for a unit without characters. Decoding the three gives back
        the unit's text; tokens away from the cuts keep their ids, those around a cut are re-encoded."""
        unit = np.asarray(unit, dtype=np.int64)
        nchars = self.table.nchars[unit]
        cum = np.cumsum(nchars)
        total = int(cum[-1]) if len(cum) else 0
        if total == 0:
            return None
        a, b = sorted((int(u1 * (total + 1)), int(u2 * (total + 1))))
        wa, wb = self._window(unit, cum, nchars, a), self._window(unit, cum, nchars, b)
        cat = np.concatenate
        if wb[0] < wa[1]:  # the two windows overlap: one window holding both cuts
            s, e = min(wa[0], wb[0]), max(wa[1], wb[1])
            text, base = self._text(unit, s, e, cum)
            if text is None:
                return self._split_at_tokens(unit, cum, a, b)
            p, m, x = self._encode(text[:a - base], text[a - base:b - base], text[b - base:])
            return cat((unit[:s], p)), m, cat((x, unit[e:]))
        (sa, ea), (sb, eb) = wa, wb
        ta, base_a = self._text(unit, sa, ea, cum)
        tb, base_b = self._text(unit, sb, eb, cum)
        if ta is None or tb is None:
            return self._split_at_tokens(unit, cum, a, b)
        pa, ma, mb, sb_ = self._encode(ta[:a - base_a], ta[a - base_a:], tb[:b - base_b], tb[b - base_b:])
        return cat((unit[:sa], pa)), cat((ma, unit[ea:sb], mb)), cat((sb_, unit[eb:]))

    def _window(self, unit, cum, nchars, c):
        """[s, e): the tokens to re-encode for a cut before character c; s == e when c falls between tokens."""
        k = int(np.searchsorted(cum, c, side="right"))  # the token holding character c (zero-width ones go left)
        if k >= len(unit) or c == cum[k] - nchars[k]:
            return k, k
        t = self.table

        def starts_word(j):  # whitespace after a token ending in something else: where a BPE pre-token begins
            return t.word_start[unit[j]] and not t.space_end[unit[j - 1]]

        s = k
        while s > 0 and k - s < WINDOW_TOKENS and not starts_word(s) and not t.atomic[unit[s - 1]]:
            s -= 1
        while s < k and not t.lead_first[unit[s]]:
            s += 1
        e = k + 1
        while e < len(unit) and e - k < WINDOW_TOKENS and not starts_word(e) and not t.atomic[unit[e]]:
            e += 1
        while k + 1 < e < len(unit) and not t.lead_first[unit[e]]:
            e -= 1
        return s, e

    def _text(self, unit, s, e, cum):
        """(text of unit[s:e], characters before s), or (None, _) when those tokens do not decode alone."""
        base = int(cum[s - 1]) if s > 0 else 0
        if s == e:
            return "", base
        try:
            text = self.table.text_of(unit[s:e].tolist())
        except UnicodeDecodeError:
            return None, base
        return (text, base) if len(text) == int(cum[e - 1]) - base else (None, base)

    def _split_at_tokens(self, unit, cum, a, b):
        """Fallback for cuts whose tokens do not decode alone (bytes of a character cut by the sample boundary): cut
        before the tokens holding characters a and b instead."""
        ka, kb = int(np.searchsorted(cum, a, side="right")), int(np.searchsorted(cum, b, side="right"))
        return unit[:ka], unit[ka:kb], unit[kb:]

    def _encode(self, *texts):
        """Each text's ids as np.int64 (one call per text: SentencePiece's batch call costs more for a few short
        texts)."""
        encode = self.tokenizer.encode
        return [np.asarray(encode(t), dtype=np.int64) if t else _EMPTY for t in texts]


def _file_sep_names():
    from megasnow.data import special_tokens

    return special_tokens.FILE_SEP_ALIASES


class FIMDataset:
    """`ds[i]` = `transform(dataset[i], i)`: fill-in-the-middle over any GPT dataset or blend (same length)."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.transform(self.dataset[i], int(i))

    def __getattr__(self, name):  # description, weights, prefix, ... of the wrapped dataset
        if name in ("dataset", "transform"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self):
        t = self.transform
        return f"FIMDataset({self.dataset!r}, rate={t.rate}, spm_rate={t.spm_rate}, level={t.level!r})"
