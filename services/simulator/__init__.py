"""Simulated sources for development, demos and evaluation: a factory (`plant`) and a call
centre (`callcenter`) producing contract-v1 records with ground truth, and `fusionwatch simulate`
(`run`, `cli`) that produces them to Kafka at real time, N x, or as fast as possible."""
