"""Loading models onto a device: the policy, the hub PRMs, and the precision they load at."""
