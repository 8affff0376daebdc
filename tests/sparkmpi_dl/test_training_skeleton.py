"""The Horovod/Keras skeleton every trainer shares (sparkmpi_dl.training.keras): a resume
continues from rank 0's checkpoint, refuses one that does not fit the model (the quality
estimator's own copy restored without that check), and one callback list in one order."""
import numpy as np
import pytest

from sparkmpi_dl.training.keras import compile_distributed, restore_and_broadcast, training_callbacks


def _compiled(extra_layer: bool = False):
    import tensorflow as tf

    inputs = tf.keras.Input((3,))
    x = tf.keras.layers.Dense(1)(tf.keras.layers.Dense(4)(inputs))
    if extra_layer:  # the checkpoint of the plain model has nothing for it
        x = tf.keras.layers.Dense(1)(x)
    model = tf.keras.Model(inputs, x)
    optimizer = compile_distributed(model, tf.keras.optimizers.legacy.SGD(0.05, momentum=0.9),
                                    loss="mse")
    return model, optimizer


@pytest.fixture(scope="module")
def one_rank():
    import horovod.tensorflow.keras as hvd

    hvd.init()  # a lone process is a job of size 1
    assert hvd.size() == 1


def test_resume_continues_and_refuses_a_checkpoint_that_does_not_fit(one_rank, tmp_path):
    model, optimizer = _compiled()
    fresh = restore_and_broadcast(model, optimizer, tmp_path, rank=0, resume=True)
    assert fresh.first_epoch == 0 and fresh.restored is None
    model.fit(np.ones((8, 3), np.float32), np.ones((8, 1), np.float32), epochs=2, batch_size=4,
              verbose=0, callbacks=training_callbacks(fresh, 0, tmp_path))
    assert fresh.latest_checkpoint and fresh.latest_checkpoint.endswith("ckpt-2")

    again, again_optimizer = _compiled()
    resumed = restore_and_broadcast(again, again_optimizer, tmp_path, rank=0, resume=True)
    assert resumed.first_epoch == 2 and resumed.restored == fresh.latest_checkpoint
    for trained, restored in zip(model.variables + optimizer.variables(),
                                 again.variables + again_optimizer.variables()):
        np.testing.assert_array_equal(trained.numpy(), restored.numpy())

    bigger, bigger_optimizer = _compiled(extra_layer=True)
    with pytest.raises(AssertionError):  # not a silent partial restore
        restore_and_broadcast(bigger, bigger_optimizer, tmp_path, rank=0, resume=True)


def test_one_callback_list_in_one_order(one_rank, tmp_path):
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from sparkmpi_dl.training.callbacks import EpochCheckpoint, LossLog, ProgressLines

    model, optimizer = _compiled()
    resumed = restore_and_broadcast(model, optimizer, tmp_path, rank=0, resume=False)
    log, progress = LossLog(None, 2), ProgressLines(1, 2)
    rank0 = training_callbacks(resumed, 0, tmp_path, log, None, last=[progress])
    assert [type(c) for c in rank0] == [hvd.callbacks.MetricAverageCallback, EpochCheckpoint,
                                        LossLog, tf.keras.callbacks.TensorBoard, ProgressLines]
    other = training_callbacks(resumed, 1, tmp_path, log)  # TensorBoard is rank 0's
    assert [type(c) for c in other] == [hvd.callbacks.MetricAverageCallback, EpochCheckpoint, LossLog]
