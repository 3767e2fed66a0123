"""`python -m scalelab_trainer.horovodrun ARGS`: Horovod's own `horovodrun`, without its probe.

Before it starts any rank, `horovodrun --gloo` checks that Horovod was built with Gloo by importing
horovod.tensorflow, and so all of TensorFlow, in a child process of its own
(horovod/common/util.py `gloo_built`). On this project's 2-core machine that probe measured about
3 s of CPU and 5 to 10 s of wall time per launch, beside ranks that import TensorFlow anyway. Here
the probe is skipped, and every rank makes the same check when it starts Horovod, with the module
already loaded (world.py `start`). Everything else is horovodrun's command line as Horovod 0.28.1
(the pinned release) parses and runs it.

The local executor (`scalelab run`) launches every trial of N > 1 processes through this module,
in the trainer's interpreter; on a cluster the MPIJob's launcher runs `mpirun`, which has no probe.
"""

from __future__ import annotations


def main() -> None:
    """horovodrun's command line; a rank's failure raises, as with horovodrun (exit status 1)."""
    from horovod.runner import launch

    # run_controller() asks this before it starts the ranks over Gloo; the ranks ask it again.
    launch.gloo_built = lambda verbose=False: True
    launch.run_commandline()


if __name__ == "__main__":
    main()
