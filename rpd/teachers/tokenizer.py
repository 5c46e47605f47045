"""A word-level hashing tokenizer built locally: no vocabulary file, no download.

Words (lower-cased alphanumeric runs) map to ids by CRC32 into `vocab_size - 2` buckets; id 0
is padding and id 1 marks the end. Any instruction tokenizes, and the same instruction always
gives the same ids on every machine.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

PAD, EOS = 0, 1
_WORD = re.compile(r"[a-z0-9]+")


def tokenize(texts: list[str], vocab_size: int = 4096, max_len: int = 16) -> np.ndarray:
    """Token ids [B, max_len] int64 (padded with 0, truncated to max_len incl. the end mark)."""
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, text in enumerate(texts):
        words = _WORD.findall(text.lower())[: max_len - 1]
        ids = [2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in words] + [EOS]
        out[i, : len(ids)] = ids
    return out
