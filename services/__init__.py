"""The runnable parts of fusionwatch: one subpackage per deployable (broker, simulator, ingest,
monitor, summarizer, api, scheduler) and the `fusionwatch` CLI that starts them."""
