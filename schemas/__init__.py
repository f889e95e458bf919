"""Every data contract of fusionwatch: the CloudEvents envelopes on the wire, the anomaly event,
the SQL tables and their migrations, and the API shapes. A reader learns the data model here."""
