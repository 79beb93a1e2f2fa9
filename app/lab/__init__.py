"""The research lab: training verifiers on the policy's own solutions (and measuring them)."""
