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
) -> tf.Tensor:
    """Mean cross-entropy of each user against the batch's items.

    user, item: (B, d) unit vectors, row i a positive pair; item_ids: (B,) int, equal ids
    mean the same item; item_prob: (B,) sampling probability of each item, or None for no
    correction. Returns a scalar.
    """
    logits = tf.matmul(user, item, transpose_b=True) / temperature  # (B, B)
    if item_prob is not None:
        probs = tf.broadcast_to(item_prob[tf.newaxis, :], tf.shape(logits))
        logits = _correction(logits, probs)
    same_item = tf.equal(item_ids[:, tf.newaxis], item_ids[tf.newaxis, :])
    off_diagonal = tf.logical_not(tf.eye(tf.shape(logits)[0], dtype=tf.bool))
    logits = tf.where(same_item & off_diagonal, tf.constant(-1e9, logits.dtype), logits)
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
