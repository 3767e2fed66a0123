"""Each rank contributes (rank + 1) * [1, 2, 3]; prints the summed tensor, one JSON line a rank."""

import json

import horovod.tensorflow as hvd
import tensorflow as tf

hvd.init()
x = tf.constant([1.0, 2.0, 3.0], dtype=tf.float64) * (hvd.rank() + 1)
s = hvd.allreduce(x, op=hvd.Sum)
print(json.dumps({"rank": hvd.rank(), "size": hvd.size(), "sum": s.numpy().tolist()}), flush=True)
