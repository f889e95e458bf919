"""Training and evaluation of the fusion model: datasets from the simulator, Kafka or disk,
the training recipes, the evaluation harness, and the `fusionwatch train` / `eval` commands."""
