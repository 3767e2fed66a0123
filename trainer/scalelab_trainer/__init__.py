"""scalelab data plane: the Horovod + TensorFlow 2 trial program."""
