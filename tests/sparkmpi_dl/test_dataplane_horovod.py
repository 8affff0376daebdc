"""Horovod on DataFrames: each Horovod rank gets its own partition through the data plane."""

import numpy as np

import sparkmpi_dl.horovod

from .test_mpirun import Lines


def test_horovod_ranks_reduce_their_own_partitions(spark):
    def partition_sum(table):
        import horovod.tensorflow as hvd
        import tensorflow as tf
        hvd.init()
        mine = float(sum(table["id"].to_pylist()))
        total = hvd.allreduce(tf.constant([mine]), op=hvd.Sum)
        return hvd.rank(), hvd.size(), mine, float(total.numpy()[0])

    df = spark.range(0, 10, numPartitions=2)
    results = sparkmpi_dl.horovod.run(partition_sum, data=df, controller="mpi", return_all=True,
                                      output=Lines(), env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert results == [(0, 2, 10.0, 45.0), (1, 2, 35.0, 45.0)]


def test_the_keras_trainer_trains_on_a_dataframe(spark, tmp_path):
    from trainers.config import TrainConfig
    from trainers.train import train_dataframe

    rows = 64
    images = np.random.default_rng(0).random((rows, 8 * 8), dtype=np.float32)
    labels = (images.mean(axis=1) > 0.5).astype(int)
    df = spark.createDataFrame([(images[i].tolist(), int(labels[i])) for i in range(rows)],
                               "image array<float>, label long").repartition(2)
    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=8, image_shape=(8, 8, 1),
                         num_classes=2, width=4, verbose=False, out_dir=str(tmp_path / "run"))
    summary = train_dataframe(df, config, output=Lines(), env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert summary["size"] == 2 and summary["steps_per_epoch"] == 2
    assert len(summary["step_losses"]) == 2 and all(np.isfinite(summary["step_losses"]))
    assert (tmp_path / "run" / "model.keras").exists()
