"""consumer.heap: the objects alive after start-up are exempt from full GC passes until a model swap."""

import gc
import weakref

from consumer.heap import freeze_long_lived, refreeze


class Node:
    pass


def test_frozen_objects_skip_collection_until_a_refreeze():
    try:
        node = Node()
        node.self = node  # a reference cycle: only the cyclic collector frees it
        assert freeze_long_lived() == gc.get_freeze_count() > 0
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is not None  # frozen: a full collection does not look at it
        assert refreeze() == gc.get_freeze_count() > 0
        assert alive() is None  # unfrozen, collected, and what is left frozen again
    finally:
        gc.unfreeze()
