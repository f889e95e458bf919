"""`fusionwatch up`: every service of fusionwatch in one process, on the embedded defaults."""
