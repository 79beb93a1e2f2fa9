"""The transformers step engine: a hub policy (on a GPU, or a CPU without its GGUF) as a
`StepGenerator`, built so no prefix is encoded twice. GGUF policies run in llama.cpp instead
(backend/llama/).

How it saves work:
- every continuation of a call is decoded in one batch (batch.py, decode.py);
- a partial solution's KV cache is kept after the call that wrote it (keyed by its content), so a
  surviving beam continues from its cache; the question's prompt is prefilled once per question
  and shared by every candidate (rows are gathered, repeated and left-padded once per call);
- decoding writes into a preallocated KV slab instead of concatenating per token (slab.py);
- a row leaves the batch when its step ends (at the step delimiter, EOS or a token limit:
  backend/stopping.py); the batch is compacted once a quarter of it has finished rather than
  after every row, and steps are handed to the caller as they end (`stream_steps`);
- next steps are written ahead while an iteration's last rows finish (speculation.py): a row
  whose step has ended goes on with its next step, and when the search hints which
  continuations it will keep (`Sampling.keep` and `.rank`, which a beam search gives with a
  cheap PRM), the likely survivors are copied so that each continuation the next call asks for
  is already under way.
Each stored row keeps its KV for all tokens but the last ("pending") one; the next call feeds
the pending tokens first, so a stored row needs no logits and a new prompt needs no special case.

Modules: engine.py (StepEngine: the protocol, the prefix store, prefill, eviction), decode.py
(one call's decoding loop), batch.py (the decoding batch), slab.py (the KV slab), speculation.py
(steps written ahead and the ranking that picks them), sampler.py, state.py (the bookkeeping
types).
"""

from backend.engine.engine import StepEngine
from backend.engine.slab import SlabLayer
from backend.engine.state import EngineStats, Prefetch, RowState

__all__ = ["EngineStats", "Prefetch", "RowState", "SlabLayer", "StepEngine"]
