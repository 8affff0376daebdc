"""Bounding TensorFlow's thread pools, for ranks that share a host's cores."""
from __future__ import annotations


def limit_tf_threads(intra_op: int, inter_op: int | None = None) -> bool:
    """Set TF's intra-/inter-op pool sizes; False if TF already runs in this process.

    TF fixes its pools when it first executes anything, after which setting them raises.
    A rank launched by the project is a fresh process and always gets its limits; a caller
    that shares a process with earlier TF work (a notebook, a test session) keeps TF's
    existing pools instead of failing.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        return False
    return True
