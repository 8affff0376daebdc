"""Live reconstruction: detector frames stream through a broker (Redis Streams) and Spark
Structured Streaming into an online MPI reconstruction.

* :mod:`.broker`: the embedded ``redis-server`` (start, record, find, stop)
* :mod:`.records`: the wire format and the Spark columns any frame stream must have
* :mod:`.publish`: the detector simulator / publisher
* :mod:`.source`: ``spark.readStream.format("sparkmpi-redis")``
* :mod:`.online`, :mod:`.state`: the rank side and its checkpointed state
* :mod:`.recon`: the driver (``foreachBatch`` -> MPI ranks -> images, commit, final result)
"""
