"""Generic Horovod/Keras training glue that every trainer of the project shares.

The image classifier (``trainers``) and the reconstruction-quality estimator
(``recon_datasets.estimator``) are both Horovod ranks that restore on rank 0, broadcast,
checkpoint every epoch and read a row-group shard of a Parquet set; the skeleton lives here
once, below both packages, so neither imports the other:

- :mod:`sparkmpi_dl.training.keras`: TF set-up, the distributed optimizer, restore and
  broadcast, the callback list;
- :mod:`sparkmpi_dl.training.callbacks`: the Keras callbacks themselves (imports TensorFlow);
- :mod:`sparkmpi_dl.training.shards`: Parquet row-group sharding (metadata only, no
  communication).
"""
