"""Inference state for `generate`: a recurrent state per SSM mixer, a KV cache per attention mixer.

Documents are tracked per batch row, so a prompt packed with several documents (or left-padded: padding is
its own document) decodes exactly as the last document alone would:
- `last_seg` (B,) global segment id of the last token seen; a new token whose `seq_idx` differs starts a new
  segment (SSM state reset, no attention to older keys);
- `next_pos` (B,) RoPE position of the next token inside its document;
- `key_segs` (B, T) segment id of every cached key (the attention mask in decode).
Layer states live in `states[name]` (name = the module's path in the model), created by the mixers.
"""

from __future__ import annotations

import torch


class HybridCache:
    is_compileable = False  # read by transformers' generate

    def __init__(self):
        self.states: dict[str, dict[str, torch.Tensor]] = {}
        self.last_seg: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None
        self.key_segs: torch.Tensor | None = None
        self.last_doc: torch.Tensor | None = None  # (B,) the caller's seq_idx of the last token

    @property
    def seen_tokens(self) -> int:
        return 0 if self.key_segs is None else self.key_segs.shape[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __bool__(self) -> bool:  # an empty cache is still a cache (generate tests `if past_key_values`)
        return True

    def advance(self, segs: torch.Tensor, positions: torch.Tensor, seq_idx: torch.Tensor | None) -> None:
        """Record the tokens of one forward (global segment ids, RoPE positions and document ids, (B, L))."""
        self.key_segs = segs if self.key_segs is None else torch.cat([self.key_segs, segs], dim=1)
        self.last_seg = segs[:, -1]
        self.next_pos = positions[:, -1] + 1
        if seq_idx is not None:
            self.last_doc = seq_idx[:, -1]
        elif self.last_doc is None:
            self.last_doc = torch.zeros_like(self.last_seg, dtype=torch.long)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search)."""
        for state in self.states.values():
            for key, value in state.items():
                state[key] = value.index_select(0, beam_idx.to(value.device))
        for name in ("last_seg", "next_pos", "key_segs", "last_doc"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, beam_idx.to(value.device)))
