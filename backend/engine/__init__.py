"""The step engine: the policy model as a `StepGenerator`, built so no prefix is encoded twice.

How it is fast on two CPU cores:
- every continuation of a call is decoded in one batch (batch.py, decode.py);
- a partial solution's KV cache is kept after the call that wrote it (keyed by its content), so a
  surviving beam continues from its cache; the question's prompt is prefilled once per question
  and shared by every candidate (rows are gathered, repeated and left-padded once per call);
- decoding writes into a preallocated KV slab instead of concatenating per token (slab.py);
- a row leaves the batch when its step ends (at the step delimiter, EOS or a token limit:
  stopping.py); the batch is compacted once a quarter of it has finished rather than after every
  row, and steps are handed to the caller as they end (`stream_steps`);
- on the CPU, batches of at most 8 rows (the tails of a search) read 4-bit or int8 copies of
  the weights (backend/kernels/small_batch.py), and the thread count is tuned per batch size
  (backend/kernels/threads.py);
- one-token steps run through a lean decoder (backend/kernels/fast_decode.py) where the model allows:
  the question's prompt is one shared prefix whose KV every row's attention reads once, so the
  slab and the stored rows hold only each row's own tokens (the last few rows of a batch take
  the prompt back into their rows, where one attention is faster than two);
- next steps are written ahead while an iteration's last rows finish (speculation.py): a row
  whose step has ended goes on with its next step, and when the search hints which
  continuations it will keep (`Sampling.keep` and `.rank`, which a beam search gives with a
  cheap PRM), the likely survivors are copied so that each continuation the next call asks for
  is already under way.
Each stored row keeps its KV for all tokens but the last ("pending") one; the next call feeds
the pending tokens first, so a stored row needs no logits and a new prompt needs no special case.

Modules: engine.py (StepEngine: the protocol, the prefix store, prefill, eviction), decode.py
(one call's decoding loop), batch.py (the decoding batch), slab.py (the KV slab), speculation.py
(steps written ahead and the ranking that picks them), sampler.py, stopping.py, state.py (the
bookkeeping types).
"""

from backend.engine.engine import StepEngine
from backend.engine.slab import SlabLayer
from backend.engine.state import EngineStats, Prefetch, RowState

__all__ = ["EngineStats", "Prefetch", "RowState", "SlabLayer", "StepEngine"]
