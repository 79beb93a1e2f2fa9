"""CPU kernels of the step engine: the lean one-token decoder, small-batch low-bit weights, and
the thread tuner that picks a thread count per batch size."""
