"""Keep the garbage collector's full passes off the latency path.

A loaded service holds about 230,000 long-lived Python objects (torch, transformers, the tokenizers, the
models). A full (generation 2) collection walks all of them: 120 ms on an idle 2-core box, and in
``triage bench`` under the steady load the service ran one about every 10-20 s at 114-142 ms, each
stalling the batch in hand while inquiries queued behind it. :func:`gc.freeze` moves the objects that
exist now into a permanent generation that collections skip. Reference counting still frees them; only
reference cycles among frozen objects wait until they are unfrozen, which :func:`refreeze` does when a
new model replaces the old one.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collect once, then exempt every object alive now from later collections; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze() -> None:
    """Give the frozen objects back to the collector (when the service or the bench is done with them)."""
    gc.unfreeze()


def refreeze() -> int:
    """After a model swap: let the old model's reference cycles be collected, then freeze the new state.

    One full collection (about as long as those it saves, once per reload)."""
    unfreeze()
    return freeze_long_lived()
