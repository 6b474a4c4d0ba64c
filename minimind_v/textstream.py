"""Generated token ids -> text, incrementally: whole characters only, stop strings cut.

Byte-level BPE can end a token in the middle of a UTF-8 character, so a delta is released only when
the decoded text does not end in a replacement character. Only the ids since the last complete
character are decoded each time, so streaming costs O(1) per token instead of re-decoding the whole
reply. Used by `VLM.stream` (chat) and by the server's engine (with stop strings).
"""
from __future__ import annotations


class TextStream:
    """Generated ids -> text deltas: whole characters only, stop strings cut, partial matches held."""

    def __init__(self, tok, stops: list[str] | None = None):
        self.tok = tok
        self.stops = list(stops or [])
        self.pending: list[int] = []   # ids since the last complete character
        self.text = ""         # text so far (what VLM.stream would have yielded, joined)
        self.sent = 0          # characters of `text` handed out
        self.stopped = False   # a stop string was found

    def push(self, token: int) -> str:
        """Add one id; return the text that is now safe to send (may be '')."""
        # Decode only the ids since the last complete character: byte-level UTF-8 resynchronises at a
        # character boundary, so the pieces joined equal the decode of all ids, at O(1) cost per token
        # instead of O(length): re-decoding the whole answer per token grows quadratically with its length.
        self.pending.append(token)
        piece = self.tok.decode(self.pending)
        if piece and not piece.endswith("\ufffd"):
            self.text += piece
            self.pending = []
        if self.stops:
            cut = self._first_stop()
            if cut is not None:
                self.text, self.stopped = self.text[:cut], True
                return self._take(len(self.text))
            return self._take(len(self.text) - self._held())
        return self._take(len(self.text))

    def finish(self) -> str:
        """The held-back rest, once generation ended without completing a stop string."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent:end], end
        return out

    def _first_stop(self) -> int | None:
        hits = [i for s in self.stops if (i := self.text.find(s, max(0, self.sent - len(s)))) >= 0]
        return min(hits) if hits else None

    def _held(self) -> int:
        """Length of the longest suffix of `text` that is the start of some stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best
