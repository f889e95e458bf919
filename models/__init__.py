"""PyTorch only: featurizers, encoders, the cross-attention fusion model, its baselines, heads,
training, calibration and attribution. No Kafka, no SQL: importable and testable without a broker."""
