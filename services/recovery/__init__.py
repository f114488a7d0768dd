"""Recovery: the kopf operator in the destination that turns the stand-by into the active cluster."""
