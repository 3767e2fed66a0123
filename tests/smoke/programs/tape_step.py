"""One DistributedGradientTape step on different data per rank; prints each rank's variables.

Ranks start from different initial values on purpose: the broadcast after the first step must
make them identical anyway (Horovod's examples broadcast after step 0 for the same reason).
"""

import json

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

hvd.init()
rng = np.random.default_rng(hvd.rank())
w = tf.Variable(rng.normal(size=(4, 1)))
x = tf.constant(rng.normal(size=(8, 4)))
y = tf.constant(rng.normal(size=(8, 1)))
opt = tf.keras.optimizers.SGD(0.1)
for step in range(3):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((x @ w - y) ** 2)
    tape = hvd.DistributedGradientTape(tape)
    grads = tape.gradient(loss, [w])
    opt.apply_gradients(zip(grads, [w], strict=True))
    if step == 0:
        hvd.broadcast_variables([w], root_rank=0)
        hvd.broadcast_variables(opt.variables(), root_rank=0)
print(json.dumps({"rank": hvd.rank(), "w": w.numpy().ravel().tolist()}), flush=True)
