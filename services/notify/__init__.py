"""Alert delivery: event changes from `fw.events` to MQTT brokers and signed webhooks.

    fw.events (CloudEvent per event revision) ─► transition (opened / escalated / closed)
        ─► rules (asset glob, kind, severity, transition → channels) ─► delivery per channel
        (retries with backoff, dead letter after the limit) ─► ledger row ─► Kafka offset

Modules, one job each: `notification` (the message built from a CloudEvent, its links and
payload), `rules` (transition and routing), `mqtt` and `webhook` (the channels), `delivery`
(attempts, backoff, dead letters for one notification), `ledger` (SQL: what was delivered,
dead letters, the severity seen per event), `service` (the consumer loop) and `cli`.
"""
