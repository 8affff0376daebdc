#!/bin/sh
# A Spark resource discovery script announcing two (pretend) GPUs, for the launcher tests.
echo '{"name": "gpu", "addresses": ["0", "1"]}'
