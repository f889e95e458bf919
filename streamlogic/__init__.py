"""Pure stream logic: windowing, the event lifecycle, per-asset rate limits.

No Kafka, no SQL, no torch: everything here is a function of the records it is given, so
training, evaluation, the API and the live monitor share one definition of a window and of an
event, and it is tested without a broker.
"""
