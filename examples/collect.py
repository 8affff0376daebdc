"""Summing arrays the Spark driver-worker way (the seed paper's Fig. 5), for comparison.

    spark-submit --master local[4] examples/collect.py 4

Each partition makes an 8 MB float32 array; the driver collects them all and sums them.
Compare its time with examples/allreduce.py, or run both side by side with
`sparkmpi-dl bench allreduce`.
"""
import sys
import time

import numpy as np

from sparkmpi_dl.launch.spark import spark_context


def sendbuf(rank_and_n):
    rank, n = rank_and_n
    buf = np.arange(n, dtype=np.float32)
    buf[n - 1] = 5.0
    return buf


if __name__ == "__main__":
    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    sc = spark_context(app_name="collect")  # Spark's INFO lines off (SPARKMPI_DL_VERBOSE=1)
    rdd = sc.parallelize([(r, 2 * 1000 * 1000) for r in range(partitions)], partitions)
    rdd.map(sendbuf).count()  # warm-up: start the Python workers
    start = time.perf_counter()
    total = np.sum(rdd.map(sendbuf).collect(), axis=0)
    print(f"collect + sum of {partitions} x 8 MB on the driver: "
          f"{(time.perf_counter() - start) * 1e3:.1f} ms, last element {total[-1]:.0f}")
