"""The step scorers (PRMs): the offline arithmetic checker, the self-judge, and the hub PRMs."""
