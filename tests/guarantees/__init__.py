"""The guarantees, each tested by the attack on it: a suite that grows with every new field or endpoint."""
