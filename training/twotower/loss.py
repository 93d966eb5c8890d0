"""In-batch softmax with sampling-bias (log-Q) correction and accidental-hit masking.

For a batch of B (user, item) positives, every other item of the batch is a negative of
each user. Popular items appear in batches more often, so as negatives they are
over-penalised; subtracting log q(item), the item's share of training positives, corrects
that (Yi et al., 2019) — the paper's "in-batch negatives weighted by inverse item
frequency". keras-rs provides the correction; it does not mask accidental hits (its
``RemoveAccidentalHits`` is a no-op in 0.4.0), so a row's copies of its own positive item
elsewhere in the batch are masked here.
"""

from __future__ import annotations

import keras_rs
import tensorflow as tf

_correction = keras_rs.layers.SamplingProbabilityCorrection()


def in_batch_softmax_loss(
    user: tf.Tensor,
    item: tf.Tensor,
    item_ids: tf.Tensor,
    item_prob: tf.Tensor | None,
    temperature: float,
    offset: tf.Tensor | int = 0,
    denominator: tf.Tensor | int | None = None,
) -> tf.Tensor:
    """Mean cross-entropy of each user against the batch's items.

    user: (b, d) and item: (B, d) unit vectors, user row i the positive of item row
    ``offset + i``; columns past the batch's own items are sampled negatives, nobody's
    positive (b = B less those and offset 0 on one process; under a distribution strategy a
    replica's share of the users against the whole global batch's items, so every user
    still has the B - 1 negatives one process gives it); item_ids: (B,) int, equal ids
    mean the same item; item_prob: (B,) sampling probability of each item, or None for no
    correction. Returns the mean over the b rows, or their sum over ``denominator`` (the
    global batch: the replicas' sums then add up to the one-process mean).
    """
    logits = tf.matmul(user, item, transpose_b=True) / temperature  # (b, B)
    if item_prob is not None:
        probs = tf.broadcast_to(item_prob[tf.newaxis, :], tf.shape(logits))
        logits = _correction(logits, probs)
    labels = offset + tf.range(tf.shape(logits)[0])
    own = tf.gather(item_ids, labels)
    same_item = tf.equal(own[:, tf.newaxis], item_ids[tf.newaxis, :])
    not_own = tf.not_equal(labels[:, tf.newaxis], tf.range(tf.shape(logits)[1])[tf.newaxis, :])
    logits = tf.where(same_item & not_own, tf.constant(-1e9, logits.dtype), logits)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    if denominator is None:
        return tf.reduce_mean(ce)
    return tf.reduce_sum(ce) / tf.cast(denominator, ce.dtype)
